"""Push a folder to the Hugging Face Hub (`HfApi.create_repo` + `upload_folder`).

The token comes from where huggingface_hub looks (`HF_TOKEN`, `hf auth login`); it is passed to HfApi and never
printed, logged or written. Any failure (no token, no network, offline mode, refused) is one UserError line that
says the local folder is complete and how to push it later.
"""
from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub import get_token as stored_token

from ..errors import UserError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_can_push(repo_id: str) -> str:
    """Before anything is exported: a valid repo id and a token to push with (returns the token)."""
    check_repo_id(repo_id)
    token = get_token()
    if not token:
        raise UserError("cannot push to the Hub: no Hugging Face token (set HF_TOKEN or run `hf auth login`), or "
                        "export without --push-to-hub; nothing was written")
    return token


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or "") or ".." in repo_id or repo_id.endswith((".git", ".")) or len(repo_id) > 96:
        raise UserError(f"invalid Hub repo id {repo_id!r}; use ORG/NAME (letters, digits, '-', '_', '.')")
    return repo_id


def get_token() -> str | None:
    try:
        return stored_token()
    except Exception:  # an unreadable token file counts as no token
        return None


def scrub(text: str, token: str | None) -> str:
    """text with the token (and anything shaped like an HF token) replaced by ***."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "***", text)


def push_folder(folder, repo_id: str, private: bool = False, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Create the repo if needed (and the branch `revision`), upload every file of `folder`; returns the repo URL."""
    folder = Path(folder)
    token = check_can_push(repo_id)
    later = f"the exported folder {folder} is complete; push it later with `hf upload {repo_id} {folder}`"
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id=repo_id, private=private, repo_type="model", exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                          commit_message=commit_message or "Upload model exported with unified-pretrain",
                          ignore_patterns=[".*"])
    except UserError:
        raise
    except Exception as e:  # offline mode, no network, 401/403/404, ...: one line, token never shown
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"cannot push to the Hub ({type(e).__name__}: {scrub(reason, token)[:200]}); "
                        f"check the network and the token's write access; {later}") from None
    base = str(getattr(url, "url", url) or f"https://huggingface.co/{repo_id}")
    return base + (f"/tree/{revision}" if revision and revision != "main" else "")


def find_token_leaks(folder, token: str | None) -> list[str]:
    """Files under folder (weights excepted) that contain the token: must always be []."""
    if not token:
        return []
    needle = token.encode()
    leaks = []
    for path in Path(folder).rglob("*"):
        if path.is_file() and path.suffix not in (".safetensors", ".bin"):
            try:
                if needle in path.read_bytes():
                    leaks.append(str(path))
            except OSError:
                continue
    return leaks


__all__ = ["push_folder", "check_can_push", "check_repo_id", "get_token", "scrub", "find_token_leaks"]
