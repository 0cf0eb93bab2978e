"""Publish a detector folder on the Hugging Face Hub: the model repo (weights, config, card, evaluation results and
plots) in one commit, and with --space_id the Gradio Space that serves it.

    python -m hub.push --model_dir runs/atto --repo_id me/ai-image-detector --space_id me/ai-image-detector-demo
    python -m hub.push --model_dir runs/atto --repo_id me/ai-image-detector --space_id me/ai-image-detector-demo \
        --dry_run /tmp/preview    # writes what would be uploaded to /tmp/preview/{model,space}/; no network

The model folder is only ever read: the card goes into the commit from memory. Each repo gets one commit, which
the Hub applies whole or not at all, so a failed upload leaves nothing half-published in that repo.

A repo that already exists is updated only if it is empty (what the website creates: .gitattributes, README.md) or
holds this project's kind of content (a model repo whose config.json is a timm_wrapper of the same architecture; a
Space with modeling/detector.py); anything else is refused unless --force, since the commit would overwrite it.
Files of an earlier push that this one does not upload are left in place.
"""
from __future__ import annotations

import json
import logging
import shutil
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, SpaceCard, SpaceCardData, constants, get_token, hf_hub_download
from transformers import HfArgumentParser

from hub.card import PROJECT_LICENSE, license_of, load_eval_sets, build_model_card
# space_config.json, {"model_id": ...}: what the Space serves when MODEL_ID is unset (space/loading.py reads it)
from space.loading import SPACE_CONFIG

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1]
# Top-level files of a model folder that are published; everything else (checkpoints, TensorBoard logs, pickles
# such as the Trainer's training_args.bin) stays local.
MODEL_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "preprocessor_config.json",
               "training_config.json", "eval_results.json", "train_results.json", "all_results.json")
# What the Space runs: app.py imports only the space and modeling packages and SPACE_PACKAGES, and shows the
# example images (with their licenses) when the folder exists. It serves the model from the converted-model cache
# shipped beside it (model_cache/, see modeling/backends.py), so it needs none of torch, timm, transformers or the
# training stack.
SPACE_FILES = ("app.py",)
SPACE_DIRS = ("space", "modeling")
OPTIONAL_SPACE_DIRS = ("examples",)
SPACE_PACKAGES = ("gradio", "openvino", "numpy", "pillow", "huggingface-hub")
SPACE_CACHE_DIR = "model_cache"  # app.py's default --cache_dir
# Files the Hub website puts in a new repo; a repo holding only these is empty for our purposes.
EMPTY_REPO_FILES = {".gitattributes", "README.md"}
SPACE_README = """---
{{ card_data }}
---

# {{ title }}

A demo of the detector [`{{ repo_id }}`](https://huggingface.co/{{ repo_id }}): upload an image, get the probability
that it is AI-generated. Read the model card for what the score means, how it was measured and where it fails.

The model served is the Space variable `MODEL_ID` (also recorded in `space_config.json`); `model_cache/` holds it
converted for OpenVINO, so the Space installs only the inference packages. The model is licensed
`{{ model_license }}`; this Space's code `{{ license }}`.
"""


class PushError(RuntimeError):
    """Something the user must fix (or retry); the CLI prints it and exits with status 1."""


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "A detector folder written by modeling.save_detector / train/run.py."})
    repo_id: str = field(metadata={"help": "The model repo, <user or org>/<name>; created if missing."})
    private: bool = field(default=False, metadata={"help": "Create the repo (and Space) private."})
    space_id: str | None = field(default=None, metadata={"help": "Also publish the Gradio Space, <user>/<name>."})
    dry_run: str | None = field(default=None, metadata={
        "help": "Write the files that would be uploaded to <dir>/model/ and <dir>/space/ instead; no network."})
    token: str | None = field(default=None, metadata={
        "help": "A Hub write token. Default: the one from `hf auth login` or HF_TOKEN (safer than typing it here)."})
    results: list[str] = field(default_factory=list, metadata={
        "help": "results.json files of `python -m train.evaluation` to publish. Default: every one the model folder "
                "holds (<model_dir>/results.json, <model_dir>/*/results.json, <model_dir>/eval/*/results.json)."})
    force: bool = field(default=False, metadata={"help": "Update a repo that holds other content."})
    commit_message: str = field(default="Upload AI-generated image detector")


@dataclass
class RepoFiles:
    """The files of one commit: path in the repo -> local file or bytes."""
    repo_id: str
    repo_type: str
    files: dict[str, Path | bytes]


def model_files(model_dir: str | Path, repo_id: str, results=None) -> RepoFiles:
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise PushError(f"{model_dir} is not a detector folder: it has no config.json (save it with "
                        "modeling.save_detector or train/run.py).")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "timm_wrapper" or not any(model_dir.glob("*.safetensors")):
        raise PushError(f"{model_dir} is not a detector folder saved by modeling.save_detector (expected a "
                        "timm_wrapper config.json and safetensors weights).")
    files: dict[str, Path | bytes] = {}
    for pattern in MODEL_FILES:
        files.update({p.name: p for p in sorted(model_dir.glob(pattern)) if p.is_file()})
    for eval_set in load_eval_sets(model_dir, results or None):
        files.update({f"{eval_set.repo_dir}/{p.name}": p for p in eval_set.files})
    published = {p.resolve() for p in files.values()}
    skipped = sorted(p.name for p in model_dir.iterdir()
                     if p.resolve() not in published and not any(p.resolve() in f.parents for f in published))
    if skipped:
        logger.info("Not uploaded from %s: %s", model_dir, ", ".join(skipped))
    try:
        card = build_model_card(model_dir, results or None, repo_id)
    except (ValueError, FileNotFoundError) as e:
        raise PushError(f"Cannot write the model card: {e}") from e
    files["README.md"] = str(card).encode()
    return RepoFiles(repo_id, "model", files)


def space_requirements() -> bytes:
    """The inference set only, at the versions installed here (the ones the app was tested with)."""
    lines = ["# The Space's inference packages (hub/push.py); training needs the project's requirements.txt."]
    return ("\n".join(lines + [f"{name}=={version(name)}" for name in SPACE_PACKAGES]) + "\n").encode()


def space_files(space_id: str, repo_id: str, model_config: dict, project_dir: str | Path = PROJECT_DIR,
                model_dir: str | Path | None = None) -> RepoFiles:
    """model_dir: also ship its converted-model cache, so the Space starts without converting (and without torch)."""
    project_dir = Path(project_dir)
    files: dict[str, Path | bytes] = {"requirements.txt": space_requirements()}
    for name in SPACE_FILES:
        if not (project_dir / name).is_file():
            raise PushError(f"Cannot package the Space: {project_dir / name} is missing.")
        files[name] = project_dir / name
    for folder in (*SPACE_DIRS, *(d for d in OPTIONAL_SPACE_DIRS if (project_dir / d).is_dir())):
        if not (project_dir / folder).is_dir():
            raise PushError(f"Cannot package the Space: {project_dir / folder} is missing.")
        for path in sorted((project_dir / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[path.relative_to(project_dir).as_posix()] = path
    if model_dir is not None:
        from modeling.backends import fill_cache

        # The app's own cache (app.py's default --cache_dir): a model already served here is not converted again.
        cache = Path(os.environ.get("MODEL_CACHE_DIR") or project_dir / SPACE_CACHE_DIR)
        for xml in fill_cache(model_dir, cache):
            for path in (xml, xml.with_suffix(".bin")):
                files[f"{SPACE_CACHE_DIR}/{path.relative_to(cache).as_posix()}"] = path
    files[SPACE_CONFIG] = (json.dumps({"model_id": repo_id}, indent=2) + "\n").encode()
    name = space_id.split("/")[-1]
    data = SpaceCardData(
        title=name.replace("-", " ").replace("_", " "), emoji="🔍", colorFrom="blue", colorTo="gray",
        sdk="gradio", sdk_version=version("gradio"),  # the version the app was tested with here
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}", app_file="app.py",
        license=PROJECT_LICENSE, short_description="Is this image real or AI-generated?", models=[repo_id],
        tags=["ai-image-detection", "deepfake-detection"], pinned=False)
    card = SpaceCard.from_template(data, template_str=SPACE_README, title=name, repo_id=repo_id,
                                   model_license=license_of(model_config)[0])
    files["README.md"] = str(card).encode()
    return RepoFiles(space_id, "space", files)


def write_dry_run(commits: dict[str, RepoFiles], out_dir: str | Path, model_dir: str | Path) -> dict[str, Path]:
    """Write each commit's files to <out_dir>/<name>/ exactly as they would be uploaded."""
    out_dir, model_dir = Path(out_dir).resolve(), Path(model_dir).resolve()
    targets = {name: out_dir / name for name in commits}
    for target in targets.values():
        if target == model_dir or model_dir in target.parents or target in model_dir.parents:
            raise PushError(f"--dry_run would write into the model folder {model_dir}: pick another directory.")
        if target.exists() and any(target.iterdir()):
            raise PushError(f"{target} is not empty: a dry run must show exactly the files of one upload. "
                            "Remove it or pick another --dry_run directory.")
    for name, commit in commits.items():
        for path_in_repo, content in commit.files.items():
            dest = targets[name] / path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                shutil.copyfile(content, dest)
        logger.info("Dry run: %d files of %s (%s) in %s", len(commit.files), commit.repo_id, commit.repo_type,
                    targets[name])
    return targets


def _is_ours(commit: RepoFiles, remote: set[str], token: str) -> bool:
    """Is the existing repo empty or this project's content (see the module docstring)?"""
    if remote <= EMPTY_REPO_FILES:
        return True
    if commit.repo_type == "space":
        return "modeling/detector.py" in remote or "modeling/inference.py" in remote
    if "config.json" not in remote:
        return False
    remote_config = json.loads(Path(hf_hub_download(commit.repo_id, "config.json", token=token)).read_text())
    ours = json.loads(commit.files["config.json"].read_text())
    return (remote_config.get("model_type"), remote_config.get("architecture")) == (
        ours["model_type"], ours["architecture"])


def _check_existing(api: HfApi, commit: RepoFiles, token: str, force: bool) -> None:
    if not api.repo_exists(commit.repo_id, repo_type=commit.repo_type, token=token):
        return
    remote = set(api.list_repo_files(commit.repo_id, repo_type=commit.repo_type, token=token))
    if not force and not _is_ours(commit, remote, token):
        shown = ", ".join(sorted(remote)[:8]) + (", ..." if len(remote) > 8 else "")
        raise PushError(f"The {commit.repo_type} repo {commit.repo_id} already exists with other content ({shown}); "
                        "this upload would overwrite it. Pick another --repo_id/--space_id, or pass --force.")


def _upload(api: HfApi, commit: RepoFiles, token: str, private: bool, message: str, model_id: str | None) -> str:
    api.create_repo(commit.repo_id, repo_type=commit.repo_type, private=private, exist_ok=True, token=token,
                    space_sdk="gradio" if commit.repo_type == "space" else None)
    if model_id:  # before the commit, so the Space's first build already serves the right model
        api.add_space_variable(commit.repo_id, "MODEL_ID", model_id, description="Model repo the app serves",
                               token=token)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content if isinstance(content, bytes)
                                     else str(content)) for path, content in commit.files.items()]
    info = api.create_commit(commit.repo_id, operations, commit_message=message, repo_type=commit.repo_type,
                             token=token)
    return info.commit_url


def push(model_dir: str | Path, repo_id: str, private: bool = False, space_id: str | None = None,
         dry_run: str | Path | None = None, token: str | None = None,
         commit_message: str = "Upload AI-generated image detector", results=None, force: bool = False,
         project_dir: str | Path = PROJECT_DIR) -> dict[str, str | Path]:
    """Publish model_dir as repo_id (and the Space as space_id). Returns {"model": ..., "space": ...}: commit URLs,
    or with dry_run the folders written. Raises PushError with a message for the user; model_dir is never written."""
    commits = {"model": model_files(model_dir, repo_id, results)}
    if space_id:
        model_config = json.loads((Path(model_dir) / "config.json").read_text())
        commits["space"] = space_files(space_id, repo_id, model_config, project_dir, model_dir)
    if dry_run is not None:
        return write_dry_run(commits, dry_run, model_dir)

    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set, so nothing can be uploaded. Unset it, or use --dry_run to preview.")
    token = token or get_token()
    if not token:
        raise PushError("Not logged in to the Hugging Face Hub: run `hf auth login` (or set HF_TOKEN, or pass "
                        "--token) with a token that has write access. Nothing was uploaded.")
    api = HfApi(token=token)
    done: dict[str, str | Path] = {}
    step = "checking your token"
    try:
        api.whoami(token=token)
        for commit in commits.values():
            step = f"checking the existing {commit.repo_type} repo {commit.repo_id}"
            _check_existing(api, commit, token, force)
        for name, commit in commits.items():
            step = f"uploading the {commit.repo_type} repo {commit.repo_id}"
            done[name] = _upload(api, commit, token, private, commit_message, repo_id if name == "space" else None)
            logger.info("Published %s: %s", commit.repo_id, done[name])
    except PushError:
        raise
    except Exception as e:  # HTTP errors, refused tokens, dropped connections: all end the same way for the user
        published = "; ".join(f"{name} already published: {url}" for name, url in done.items())
        raise PushError(f"Failed while {step}: {type(e).__name__}: {e}. "
                        + (f"{published}. " if published else "Nothing was published. ")
                        + f"The local folder {model_dir} was not changed; re-run the same command to retry.") from e
    if private and space_id:
        logger.warning("The model repo is private: give the Space a read token as the secret HF_TOKEN "
                       "(Space settings) or it cannot load the model.")
    return done


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    try:
        result = push(args.model_dir, args.repo_id, private=args.private, space_id=args.space_id,
                      dry_run=args.dry_run, token=args.token, commit_message=args.commit_message,
                      results=args.results, force=args.force)
    except PushError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, where in result.items():
        print(f"{name}: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
