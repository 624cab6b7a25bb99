"""Monitoring a served model: windows of its inference log judged, and the HTML report."""
