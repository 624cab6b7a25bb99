"""`rollout`: a canary answers a growing share of requests; promoted or rolled back on evidence."""
