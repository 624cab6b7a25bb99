"""Mutation testing of the template: does the suite catch small, realistic regressions?

Each mutant of the catalogue is one textual change to one file of the template, in
every layer (hooks, options, generated code, Dockerfile, Makefile, CI and deploy
files). For each, a scratch copy of the template gets the change and the tests that
should catch it run there: the template's own (`template` checks), or a bake of the
defaults' own tests (`project` checks, after `uv sync`). A mutant is caught when its
tests fail. Grow the catalogue with each feature.

    make mutants                          # every mutant; prints the score
    make mutants MUTANTS=fast-order,dvc   # some of them
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "{{cookiecutter.project_slug}}"
MODULE = f"{PROJECT}/src/{{{{cookiecutter.module_name}}}}"
DEPLOYMENT = f"{PROJECT}/deploy/k8s/base/deployment.yaml"
# The Deployment's pod run on the Docker engine (bakes, trains and builds the image: minutes).
POD_TEST = ("tests/test_docker.py", "-k", "pod_spec")


@dataclass(frozen=True)
class Mutant:
    """One regression: `old` becomes `new` in `path`; `tests` should then fail."""

    name: str
    layer: str
    path: str
    old: str
    new: str
    where: str  # "template": the template's tests; "project": a bake's own tests
    tests: tuple[str, ...]


CATALOGUE = [
    Mutant("slug-uppercase", "hooks", "hooks/pre_gen_project.py",
           'SLUG = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")',
           'SLUG = re.compile(r"^[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]$")',
           "template", ("tests/test_hooks.py", "tests/test_static.py", "-k", "invalid or bad_answer")),
    Mutant("keeps-gitlab-file", "hooks", "hooks/post_gen_project.py",
           '("ci_provider", "gitlab"): [".gitlab-ci.yml"],', "",
           "template", ("tests/test_static.py", "-k", "every_combination")),
    Mutant("default-python", "options", "cookiecutter.json",
           '"python_version": ["3.12", "3.11", "3.13"]', '"python_version": ["3.11", "3.12", "3.13"]',
           "template", ("tests/test_static.py", "-k", "contract")),
    Mutant("dockerfile-root", "Dockerfile", f"{PROJECT}/Dockerfile", "USER 10001:10001\n", "",
           "template", ("tests/test_static.py", "-k", "non_root")),
    Mutant("makefile-rename", "Makefile", f"{PROJECT}/Makefile",
           "reproduce: ## Rebuild", "rebuild: ## Rebuild",
           "template", ("tests/test_static.py", "-k", "readmes_name")),
    Mutant("ci-bare-pytest", "CI", f"{PROJECT}/.github/workflows/ci.yml",
           "      - run: make test", "      - run: uv run pytest",
           "template", ("tests/test_static.py", "-k", "ci_runs_only")),
    Mutant("alert-threshold", "deploy", f"{PROJECT}/deploy/prometheus/rules.yml",
           "expr: (feature_drift_psi > 0.2)", "expr: (feature_drift_psi > 2)",
           "template", ("tests/test_static.py", "-k", "promtool or prometheus")),
    Mutant("dvc-analytics", "deploy", f"{PROJECT}/.dvc/config",
           "analytics = false", "analytics = true",
           "template", ("tests/test_static.py", "-k", "dvc")),
    Mutant("fast-order", "generated code", f"{MODULE}/core/fast_predict.py",
           "    trees = [tree.tree_ for tree in estimator.estimators_]",
           "    trees = [tree.tree_ for tree in estimator.estimators_][::-1]",
           "project", ("tests/test_fast_predict.py",)),
    Mutant("fast-float64", "generated code", f"{MODULE}/core/fast_predict.py",
           "dtype=np.float32, accept_sparse", "dtype=np.float64, accept_sparse",
           "project", ("tests/test_fast_predict.py",)),
    Mutant("register-in-run", "generated code", f"{MODULE}/jobs/train.py",
           "        decision = gate.decide(\n",
           "        registry.register(client, model_info.model_uri, registry.Decision(False, 'x'))\n"
           "        decision = gate.decide(\n",
           "project", ("tests/test_promotion.py",)),
    Mutant("dirty-is-fine", "generated code", f"{MODULE}/store/versioning.py",
           "    if code.dirty:\n", "    if False:\n",
           "project", ("tests/test_versioning.py",)),
    Mutant("gate-fails-open", "generated code", f"{MODULE}/store/gate.py",
           "        return Decision(\n            False,\n            f\"champion v{champion.version} cannot",
           "        return Decision(\n            True,\n            f\"champion v{champion.version} cannot",
           "project", ("tests/test_promotion.py",)),
    Mutant("untagged-version", "generated code", f"{MODULE}/store/registry.py",
           "PROJECT_SLUG, model.model_uri, model.run_id, tags={PROMOTION_TAG: decision.reason},",
           "PROJECT_SLUG, model.model_uri, model.run_id,",
           "project", ("tests/test_promotion.py",)),
    Mutant("compose-fixed-image", "deploy", f"{PROJECT}/compose.yaml",
           "image: ${POSTGRES_IMAGE:-postgres:16}", "image: postgres:16",
           "template", ("tests/test_static.py", "-k", "compose")),
    Mutant("host-stack-no-tracking", "deploy", f"{PROJECT}/compose.host.yaml",
           "    - tracking:127.0.0.1\n", "",
           "template", ("tests/test_static.py", "-k", "compose")),
    # The pod spec, run on the engine as the kubelet would run it (the docker tier).
    Mutant("pod-probe-path", "deploy", DEPLOYMENT,
           "          livenessProbe:\n            httpGet:\n              path: /health\n",
           "          livenessProbe:\n            httpGet:\n              path: /healthz\n",
           "template", POD_TEST),
    Mutant("pod-container-port", "deploy", DEPLOYMENT,
           "containerPort: 8080", "containerPort: 8000", "template", POD_TEST),
    Mutant("pod-no-tmp-mount", "deploy", DEPLOYMENT,
           "          volumeMounts:\n            - name: tmp\n              mountPath: /tmp\n", "",
           "template", POD_TEST),
    Mutant("pod-memory-64mi", "deploy", DEPLOYMENT,
           'memory: 512Mi\n            limits:\n              cpu: "2"\n              memory: 1Gi',
           'memory: 64Mi\n            limits:\n              cpu: "2"\n              memory: 64Mi',
           "template", POD_TEST),
    Mutant("pod-uid-0", "deploy", DEPLOYMENT,
           "runAsUser: 10001", "runAsUser: 0", "template", POD_TEST),
    Mutant("tune-on-all-rows", "generated code", f"{MODULE}/jobs/tune.py",
           "config, client, parent, parts.x_train, parts.y_train, study_name, interruption",
           "config, client, parent, dataset.features, dataset.target, study_name, interruption",
           "project", ("tests/test_tune.py",)),
    Mutant("tune-trains-twice", "generated code", f"{MODULE}/jobs/tune.py",
           "    except optuna.exceptions.DuplicatedStudyError:\n        return False\n",
           "    except optuna.exceptions.DuplicatedStudyError:\n        return True\n",
           "project", ("tests/test_tune.py",)),
    Mutant("batch-leaves-partial", "generated code", f"{MODULE}/batch/job.py",
           "        publish(temporary, destination)\n    finally:\n        remove(temporary)\n",
           "        publish(temporary, destination)\n    finally:\n        pass\n",
           "project", ("tests/test_batch.py", "-k", "interrupted")),
    Mutant("batch-ids-as-numbers", "generated code", f"{MODULE}/batch/local.py",
           '        self.dtypes.update({name: "str" for name in self.ids if name not in self.dtypes})\n',
           "",
           "project", ("tests/test_batch.py", "-k", "local_engine_predicts")),
    Mutant("ping-body", "generated code", f"{MODULE}/serving/app.py",
           'return Response("\\n", status_code=status', 'return Response("pong", status_code=status',
           "project", ("tests/test_mlflow_protocol.py",)),
    # A branch only the other task takes: the defaults' own suite must run it (both_tasks).
    Mutant("regression-plot-name", "generated code", f"{MODULE}/core/evaluation.py",
           '("residual_vs_predicted", "residuals.png")', '("residual_vs_predicted", "residual.png")',
           "project", ("tests/test_training.py", "-k", "plots")),
    # A rule at its edge: exactly `flagged` of `of` windows recommends retraining.
    Mutant("retrain-one-more", "generated code", f"{MODULE}/jobs/monitor/windows.py",
           "retrain = flagged >= settings.flagged", "retrain = flagged > settings.flagged",
           "project", ("tests/test_monitoring.py", "-k", "retraining_is_recommended")),
    # A severe window alone recommends retraining: a collapse in the first hour is no "wait".
    Mutant("severe-ignored", "generated code", f"{MODULE}/jobs/monitor/windows.py",
           "retrain = flagged >= settings.flagged or bool(severe)", "retrain = flagged >= settings.flagged",
           "project", ("tests/test_monitoring.py", "-k", "retraining_is_recommended")),
    # ... but only on enough outcomes to be sure of it.
    Mutant("severe-on-few-outcomes", "generated code", f"{MODULE}/jobs/monitor/windows.py",
           "window.outcomes >= SEVERE_OUTCOMES and", "window.outcomes >= MIN_OUTCOMES and",
           "project", ("tests/test_monitoring.py", "-k", "retraining_is_recommended")),
    # What the logged model carries, read back: its pinned requirements.
    Mutant("requirement-dropped", "generated code", f"{MODULE}/store/tracking.py",
           '"pandas", "numpy", "scipy"]', '"pandas", "numpy"]',
           "project", ("tests/test_training.py", "-k", "model_files")),
    # The floor plan: the core imports MLflow, and the contracts of pyproject.toml say so.
    Mutant("core-imports-mlflow", "generated code", f"{MODULE}/core/profile.py",
           "from ..errors import ModelError\n",
           "import mlflow  # noqa: F401\n\nfrom ..errors import ModelError\n",
           "project", ("tests/test_layers.py",)),
    # Following the registry: a new version is served only once it scored its example.
    Mutant("swap-unwarmed", "generated code", f"{MODULE}/serving/follow.py",
           "            await warm(loaded)\n", "            pass\n",
           "project", ("tests/test_follow.py", "-k", "never_served")),
    # A new version's warm-up is not traffic: neither logged nor counted in live drift.
    Mutant("warm-up-logged", "generated code", f"{MODULE}/serving/model_process.py",
           " and jobs[0][0] != WARM_UP:", ":",
           "project", ("tests/test_follow.py", "-k", "shadow_scores_every_row")),
    # A webhook event replayed an hour later is refused.
    Mutant("webhook-replay", "generated code", f"{MODULE}/serving/webhooks.py",
           "- int(timestamp)) > MAX_AGE_S:", "- int(timestamp)) > 12 * MAX_AGE_S:",
           "project", ("tests/test_follow.py", "-k", "not_signed")),
    # The server's generic error path: a bug's details never leave the server.
    Mutant("error-leaks-cause", "generated code", f"{MODULE}/serving/app.py",
           'error_response("Internal error: the server log has the details.", 500)',
           'error_response(f"Internal error: {exc}", 500)',
           "project", ("tests/test_serving.py", "-k", "unexpected_error")),
    # A rollout: a canary that fails a request is answered by the champion.
    Mutant("canary-failure-answered", "generated code", f"{MODULE}/serving/canary.py",
           "                continue\n            if not isinstance(champion[index], Exception):",
           "                answers[index] = outcome\n                continue\n"
           "            if not isinstance(champion[index], Exception):",
           "project", ("tests/test_rollout.py", "-k", "partly_failing")),
    # A guardrail at its edge: exactly min_agreement passes.
    Mutant("agreement-edge", "generated code", f"{MODULE}/jobs/rollout/guardrails.py",
           "step.agreement < rules.min_agreement",
           "step.agreement <= rules.min_agreement",
           "project", ("tests/test_rollout.py", "-k", "threshold")),
    # Which requests go to the canary depends on their ids alone, alike on every server.
    Mutant("canary-random-split", "generated code", f"{MODULE}/serving/canary.py",
           "return zlib.crc32(request_id.encode()) % SHARE_SCALE < round(share * SHARE_SCALE)",
           "return hash(request_id) % SHARE_SCALE < round(share * SHARE_SCALE)",
           "project", ("tests/test_rollout.py", "-k", "same_on_every_server")),
    # The serving image has no matplotlib: serving must never reach the evaluation code.
    Mutant("serving-imports-plots", "generated code", f"{MODULE}/store/canary.py",
           "from .registry import version_by_alias",
           "from .gate import version_by_alias",
           "project", ("tests/test_layers.py",)),
    # A deploy whose step fails puts back the revision that served before it.
    Mutant("deploy-never-undoes", "deploy", f"{PROJECT}/scripts/deploy.sh",
           '  elif kubectl rollout undo "deployment/$NAME" --to-revision="$BEFORE" \\\n',
           "  elif true \\\n",
           "template", ("tests/test_static.py", "-k", "rolls_the_deployment_back")),
    # The image of the release, not the overlay's own.
    Mutant("deploy-tag-ignored", "deploy", f"{PROJECT}/scripts/deploy.sh",
           '    newTag: "$tag"\n', "",
           "template", ("tests/test_static.py", "-k", "overlays_run or deploy_applies")),
    # Production only after a reviewer's approval (GitHub) or by hand (GitLab).
    Mutant("production-unapproved", "CI", f"{PROJECT}/.github/workflows/deploy.yml",
           "    needs: staging\n    runs-on: ubuntu-24.04\n    environment: production\n",
           "    needs: staging\n    runs-on: ubuntu-24.04\n",
           "template", ("tests/test_static.py", "-k", "github_deploys")),
    # A canary judged by the serving alerts' thresholds, not looser ones.
    Mutant("analysis-threshold", "deploy", f"{PROJECT}/deploy/k8s/argo/analysis.yaml",
           "successCondition: isNaN(result[0]) || result[0] <= 0.01",
           "successCondition: isNaN(result[0]) || result[0] <= 0.1",
           "template", ("tests/test_static.py", "-k", "argo_analysis")),
    Mutant("production-automatic", "CI", f"{PROJECT}/.gitlab-ci.yml",
           "    - if: $CI_COMMIT_TAG\n      when: manual\n", "    - if: $CI_COMMIT_TAG\n",
           "template", ("tests/test_static.py", "-k", "gitlab_deploys")),
]  # fmt: skip


def scratch_copy(destination: Path) -> None:
    """The template's tracked files, as a fresh clone has them."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def apply(mutant: Mutant, template: Path) -> None:
    path = template / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the text to change is not in {mutant.path} exactly once")
    path.write_text(text.replace(mutant.old, mutant.new))


# pytest's exit status when tests ran and some failed; any other failure (an internal
# error, a usage error, no test collected) says nothing about the mutant.
TESTS_FAILED = 1


def tests_fail(command: list[str], cwd: Path, output: IO[str], env: dict[str, str], log: Path) -> bool:
    """Run a pytest command: True if its tests ran and failed, False if they passed."""
    status = subprocess.run(command, cwd=cwd, stdout=output, stderr=output, env=env).returncode
    if status not in (0, TESTS_FAILED):
        raise SystemExit(f"pytest exited {status} (not a test failure): see {log}")
    return status == TESTS_FAILED


def template_tests_fail(
    command: list[str], cwd: Path, output: IO[str], env: dict[str, str], log: Path
) -> bool:
    """`tests_fail` for the template's tests, where only a test that failed catches the mutant.

    Their fixtures bake, install, run a bake's own suite and build images: one that fails
    (a flaky own suite on a loaded machine, an image that does not build) exits 1 too,
    and says nothing about the mutant. A project's fixtures run the code under test, so
    there an error in one does catch it.
    """
    report = log.with_suffix(".xml")
    failed = tests_fail([*command, f"--junitxml={report}"], cwd, output, env, log)
    if failed and ElementTree.parse(report).find(".//testcase/failure") is None:
        raise SystemExit(f"a fixture failed, no test did (not a test failure): see {log}")
    return failed


def caught(mutant: Mutant, template: Path, log: Path) -> bool:
    """Run the mutant's tests; True if they fail."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}}
    with log.open("w") as output:
        if mutant.where == "template":
            command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutant.tests]
            return template_tests_fail(command, template, output, env, log)
        from cookiecutter.main import cookiecutter

        project = Path(cookiecutter(str(template), no_input=True, output_dir=str(template.parent / "bake")))
        uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
        # An install that fails says nothing about the mutant (no mutant of the catalogue
        # touches the dependencies): the machine cannot install, and the run stops.
        if subprocess.run([uv, "sync", "--locked", "--quiet"], cwd=project, stdout=output, stderr=output,
                          env=env).returncode != 0:  # fmt: skip
            raise SystemExit(f"{mutant.name}: the bake did not install (not a test failure): see {log}")
        command = [uv, "run", "--locked", "pytest", "-q", "-x", *mutant.tests]
        return tests_fail(command, project, output, env, log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=os.environ.get("MUTANTS", ""), help="Comma-separated names.")
    only = {name for name in parser.parse_args().only.split(",") if name}
    mutants = [m for m in CATALOGUE if not only or m.name in only]
    logs = Path(tempfile.mkdtemp(prefix="mutants-"))
    survivors = []
    for mutant in mutants:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as folder:
            template = Path(folder) / "template"
            scratch_copy(template)
            apply(mutant, template)
            result = caught(mutant, template, logs / f"{mutant.name}.log")
        verdict = "caught" if result else "SURVIVED"
        print(
            f"{mutant.name:<20}{mutant.layer:<16}{verdict:<10}{time.monotonic() - started:6.0f} s", flush=True
        )
        if not result:
            survivors.append(mutant.name)
    print(f"\nscore: {len(mutants) - len(survivors)}/{len(mutants)} caught; logs in {logs}")
    if survivors:
        print(f"survivors: {', '.join(survivors)}: add the test that catches each")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
