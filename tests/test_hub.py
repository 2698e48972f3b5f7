"""Pushing an export to the Hub (issue 6) without a network: HfApi methods are replaced in-process; the token comes
from HF_TOKEN and never shows up in output or files; without credentials or network: one error line, and the local
folder stays complete."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.errors import UserError

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefXYZ"
EXPECTED = {"README.md", "config.json", "generation_config.json", "loss_curve.png", "model.safetensors",
            "tokenizer.json", "tokenizer_config.json", "training_config.json"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_export import real_run

    return real_run(tmp_path_factory.mktemp("hubruns"), "gpt2")


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace the HfApi calls; record what they were asked to do (and the files the upload saw)."""
    import huggingface_hub

    calls = []

    def create_repo(self, repo_id, *, private=None, repo_type=None, exist_ok=False, **kw):
        calls.append(("create_repo", {"repo_id": repo_id, "private": private, "repo_type": repo_type,
                                      "exist_ok": exist_ok, "token": self.token}))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False, **kw):
        calls.append(("create_branch", {"repo_id": repo_id, "branch": branch, "exist_ok": exist_ok}))

    def upload_folder(self, *, folder_path, repo_id, repo_type=None, revision=None, commit_message=None,
                      ignore_patterns=None, **kw):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls.append(("upload_folder", {"repo_id": repo_id, "revision": revision, "folder_path": folder_path,
                                        "files": files, "ignore_patterns": ignore_patterns,
                                        "commit_message": commit_message}))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def _no_stored_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no `hf auth login` token file here
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))


def _grep_token(*folders) -> list[str]:
    hits = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file() and FAKE_TOKEN.encode() in path.read_bytes():
                hits.append(str(path))
    return hits


def test_push_creates_repo_and_uploads(run, tmp_path, fake_hub, monkeypatch, capsys, caplog):
    from pretrain.export.command import export_main

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "out"
    assert export_main([str(run), "--out", str(out), "--push-to-hub", "my-org/tiny-gpt2", "--private",
                        "--revision", "v1", "--license", "mit"]) == 0
    names = [name for name, _ in fake_hub]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (args for _, args in fake_hub)
    assert create["repo_id"] == "my-org/tiny-gpt2" and create["private"] is True and create["exist_ok"] is True
    assert create["token"] == FAKE_TOKEN  # the token reaches the API, nothing else
    assert branch == {"repo_id": "my-org/tiny-gpt2", "branch": "v1", "exist_ok": True}
    assert upload["repo_id"] == "my-org/tiny-gpt2" and upload["revision"] == "v1"
    assert Path(upload["folder_path"]) == out
    assert set(upload["files"]) == EXPECTED  # the whole, finished folder
    assert 'my-org/tiny-gpt2' in (out / "README.md").read_text()  # the usage snippet names the repo
    assert "license: mit" in (out / "README.md").read_text()

    logged = capsys.readouterr()
    assert "pushed" in logged.out and "tree/v1" in logged.out
    for text in (logged.out, logged.err, caplog.text):
        assert FAKE_TOKEN not in text
    assert _grep_token(out, run) == []


def test_push_public_main_no_branch(run, tmp_path, fake_hub, monkeypatch):
    from pretrain.export.to_hf import export_run

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    export_run(run, tmp_path / "out", push_to_hub="someone/model", log=lambda m: None)
    assert [name for name, _ in fake_hub] == ["create_repo", "upload_folder"]
    assert fake_hub[0][1]["private"] is False and fake_hub[1][1]["revision"] is None


def test_push_without_credentials_refused_before_anything_is_written(run, tmp_path, fake_hub, monkeypatch):
    from pretrain.export.command import export_main

    _no_stored_token(monkeypatch, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        export_main([str(run), "--out", str(out), "--push-to-hub", "my-org/tiny-gpt2"])
    message = str(err.value)
    assert "\n" not in message and "HF_TOKEN" in message and "hf auth login" in message
    assert "without --push-to-hub" in message and "nothing was written" in message
    assert fake_hub == []  # nothing was attempted
    assert not out.exists()
    assert export_main([str(run), "--out", str(out)]) == 0  # the corrected command: export, push later
    assert {p.name for p in out.iterdir()} == EXPECTED


def test_push_network_failure_scrubs_token(run, tmp_path, monkeypatch):
    import huggingface_hub

    from pretrain.export.to_hf import export_run

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)

    def refuse(self, *a, **kw):
        raise ConnectionError(f"could not reach huggingface.co with Authorization: Bearer {self.token}\nretry later")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        export_run(run, out, push_to_hub="my-org/tiny-gpt2", log=lambda m: None)
    message = str(err.value)
    assert "cannot push" in message and "\n" not in message and FAKE_TOKEN not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert {p.name for p in out.iterdir()} == EXPECTED


def test_push_offline_real_client(run, tmp_path, monkeypatch):
    """The real huggingface_hub client in offline mode (no HfApi patching): one line, folder complete."""
    import huggingface_hub.constants as constants

    from pretrain.export.to_hf import export_run

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="cannot push") as err:
        export_run(run, out, push_to_hub="my-org/tiny-gpt2", log=lambda m: None)
    assert FAKE_TOKEN not in str(err.value) and "\n" not in str(err.value)
    assert {p.name for p in out.iterdir()} == EXPECTED
    assert _grep_token(out) == []


def test_cli_subprocess_token_never_printed(run, tmp_path):
    """The command as a user runs it: exit 1, one `error:` line on stderr, no traceback, token nowhere."""
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pretrain.export", str(run), "--out", str(out),
                           "--push-to-hub", "my-org/tiny-gpt2"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot push" in errors[0] and "Traceback" not in proc.stderr
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    assert {p.name for p in out.iterdir()} == EXPECTED
    assert _grep_token(out, run) == []

    usage = subprocess.run([sys.executable, "-m", "pretrain.export", str(run)], env=env, capture_output=True,
                           text=True, timeout=120)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and usage.stderr.startswith("error:")


def test_repo_id_checked_before_export(run, tmp_path):
    from pretrain.export.to_hf import export_run
    from pretrain.export.hub import check_repo_id, scrub

    for bad in ("noslash", "a/b/c", "/name", "org/", "org/na me", "org/../x"):
        with pytest.raises(UserError, match="ORG/NAME"):
            check_repo_id(bad)
        assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="ORG/NAME"):
        export_run(run, tmp_path / "out", push_to_hub="bad id", log=lambda m: None)
    assert not (tmp_path / "out").exists()
    assert check_repo_id("org-1/model_v2.0") == "org-1/model_v2.0"
    assert FAKE_TOKEN not in scrub(f"x {FAKE_TOKEN} y", None)
