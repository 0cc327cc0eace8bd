"""HFStore against the local Hub look-alike: listing, reads, ranges, errors, auth, redirects."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from aiolit import _loop
from aiolit.errors import ObjectNotFoundError, StorePermissionError
from aiolit.stores import RetryStore, open_store
from aiolit.stores._hf import HFStore, parse_hf_url
from tests.hf.hub_server import HubServer

SMALL = b"small regular file\n"
BIG = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: an LFS file (redirected to the CDN)


def fill(hub: HubServer, repo_id: str) -> None:
    hub.add_file(repo_id, "README.md", SMALL)
    hub.add_file(repo_id, "data/big.bin", BIG)
    hub.add_file(repo_id, "data/a.txt", b"a")
    hub.add_file(repo_id, "data/sub/b.txt", b"bb")
    hub.add_file(repo_id, "data/sub/deeper/c.txt", b"ccc")
    hub.add_file(repo_id, "data/z-last.txt", b"z")
    hub.add_file(repo_id, "other/x.txt", b"x")


def opts(hub: HubServer, **extra: object) -> dict[str, object]:
    return {"endpoint": hub.endpoint, **extra}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("hf://datasets/o/n", ("dataset", "o/n", "main", "")),
        ("hf://datasets/o/n/data/train/", ("dataset", "o/n", "main", "data/train")),
        ("hf://datasets/o/n@v1.0/data", ("dataset", "o/n", "v1.0", "data")),
        ("hf://datasets/o/n@my%2Fbranch/x", ("dataset", "o/n", "my/branch", "x")),
        (
            "hf://datasets/o/n@refs/convert/parquet/default/train",
            ("dataset", "o/n", "refs/convert/parquet", "default/train"),
        ),
        ("hf://datasets/o/n@refs/pr/7", ("dataset", "o/n", "refs/pr/7", "")),
        ("hf://o/model/weights", ("model", "o/model", "main", "weights")),
        ("hf://spaces/o/s/app.py", ("space", "o/s", "main", "app.py")),
    ],
)
def test_parse_hf_url(url: str, expected: tuple[str, str, str, str]) -> None:
    assert parse_hf_url(url) == expected


@pytest.mark.parametrize("url", ["hf://datasets/only-owner", "hf://datasets/o/n@", "s3://b/k"])
def test_parse_hf_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_hf_url(url)


async def test_list_paginated_sorted_and_prefixed(hub: HubServer, repo_id: str) -> None:
    fill(hub, repo_id)
    store = open_store(f"hf://datasets/{repo_id}/data", opts(hub))
    assert isinstance(store, RetryStore) and isinstance(store.inner, HFStore)
    hub.requests.clear()
    listed = [m async for m in store.list()]
    assert [m.key for m in listed] == ["a.txt", "big.bin", "sub/b.txt", "sub/deeper/c.txt", "z-last.txt"]
    assert [m.size for m in listed] == [1, len(BIG), 2, 3, 1]
    assert listed[1].etag is not None and len(listed[1].etag) == 64  # the LFS sha256
    tree_calls = [r for r in hub.requests if "/tree/" in r.path]
    assert len(tree_calls) >= 3  # 5 files + 2 folders at 3 entries a page
    assert all(r.query["recursive"] == "true" for r in tree_calls)
    assert [m.key async for m in store.list("sub/")] == ["sub/b.txt", "sub/deeper/c.txt"]
    assert [m.key async for m in store.list("sub/deeper/c")] == ["sub/deeper/c.txt"]
    assert [m.key async for m in store.list("z")] == ["z-last.txt"]
    assert [m.key async for m in store.list("nope/")] == []
    root = open_store(f"hf://datasets/{repo_id}", opts(hub))
    assert len([m async for m in root.list()]) == 7
    await store.aclose()
    await root.aclose()


async def test_get_range_head(hub: HubServer, repo_id: str) -> None:
    fill(hub, repo_id)
    store = open_store(f"hf://datasets/{repo_id}", opts(hub))
    assert await store.get("README.md") == SMALL
    assert await store.get("data/big.bin") == BIG
    for start, end in [(0, 1), (5, 17), (len(BIG) - 4, len(BIG)), (100, 10**9), (len(BIG), len(BIG) + 5)]:
        assert await store.get_range("data/big.bin", start, end) == BIG[start:end], (start, end)
    assert await store.get_range("README.md", 3, 8) == SMALL[3:8]
    assert await store.get_range("README.md", 500, 600) == b""  # 416 from the server
    assert await store.get_ranges("data/big.bin", [(0, 10), (20, 30), (9000, 9100)]) == [
        BIG[0:10],
        BIG[20:30],
        BIG[9000:9100],
    ]
    big = await store.head("data/big.bin")
    assert big.size == len(BIG) and big.etag is not None and len(big.etag) == 64
    assert (await store.head("README.md")).size == len(SMALL)
    assert await store.exists("data/a.txt")
    assert not await store.exists("data/missing.txt")
    await store.aclose()


async def test_redirects_drop_auth_and_are_reused(hub: HubServer, repo_id: str) -> None:
    fill(hub, repo_id)
    store = open_store(f"hf://datasets/{repo_id}", opts(hub, token="hf_secret"))
    hub.requests.clear()
    for start in range(0, len(BIG), 1000):
        assert await store.get_range("data/big.bin", start, start + 1000) == BIG[start : start + 1000]
    cdn = [r for r in hub.requests if r.role == "cdn"]
    resolves = [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert len(cdn) == 11 and all(r.authorization is None for r in cdn)
    assert len(resolves) == 1 and resolves[0].authorization == "Bearer hf_secret"
    # An expired signed URL is replaced by asking the Hub again.
    hub.revoke_cdn_urls()
    assert await store.get_range("data/big.bin", 7, 9) == BIG[7:9]
    await store.aclose()


async def test_get_to_file_in_parts(hub: HubServer, repo_id: str, tmp_path: Path) -> None:
    fill(hub, repo_id)
    store = open_store(
        f"hf://datasets/{repo_id}/data",
        opts(hub, part_size=1500, multipart_threshold=2000, max_concurrency=4),
    )
    hub.requests.clear()
    assert await store.get_to_file("big.bin", tmp_path / "out" / "big.bin") == len(BIG)
    assert (tmp_path / "out" / "big.bin").read_bytes() == BIG
    ranges = [r.range for r in hub.requests if r.role == "cdn"]
    assert len(ranges) == 7 and all(r is not None for r in ranges)
    await store.aclose()


async def test_not_found(hub: HubServer, repo_id: str) -> None:
    fill(hub, repo_id)
    store = open_store(f"hf://datasets/{repo_id}", opts(hub))
    with pytest.raises(ObjectNotFoundError, match="EntryNotFound"):
        await store.get("data/missing.bin")
    with pytest.raises(ObjectNotFoundError):
        await store.get_range("data/missing.bin", 0, 4)
    with pytest.raises(ObjectNotFoundError):
        await store.head("nope")
    other = open_store(f"hf://datasets/{repo_id}@no-such-branch", opts(hub))
    with pytest.raises(ObjectNotFoundError, match="RevisionNotFound"):
        await other.get("README.md")
    missing = open_store("hf://datasets/nobody/nothing", opts(hub))
    with pytest.raises(ObjectNotFoundError, match="RepoNotFound"):
        _ = [m async for m in missing.list()]
    for s in (store, other, missing):
        await s.aclose()


async def test_revisions(hub: HubServer, repo_id: str) -> None:
    hub.add_file(repo_id, "f.txt", b"main")
    hub.add_file(repo_id, "f.txt", b"v2", revision="v2")
    hub.add_file(repo_id, "default/train/0.txt", b"converted", revision="refs/convert/parquet")
    main = open_store(f"hf://datasets/{repo_id}", opts(hub))
    v2 = open_store(f"hf://datasets/{repo_id}@v2", opts(hub))
    conv = open_store(f"hf://datasets/{repo_id}@refs/convert/parquet/default", opts(hub))
    assert await main.get("f.txt") == b"main"
    assert await v2.get("f.txt") == b"v2"
    assert [m.key async for m in conv.list()] == ["train/0.txt"]
    assert await conv.get("train/0.txt") == b"converted"
    for s in (main, v2, conv):
        await s.aclose()


async def test_auth(hub: HubServer, repo_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo(repo_id, token="hf_good")
    fill(hub, repo_id)
    url = f"hf://datasets/{repo_id}"
    anonymous = open_store(url, opts(hub), retry=False)
    with pytest.raises(StorePermissionError, match="HF_TOKEN") as info:
        await anonymous.get("README.md")
    assert info.value.status == 401  # type: ignore[attr-defined]
    wrong = open_store(url, opts(hub, token="hf_wrong"))
    with pytest.raises(StorePermissionError) as info:
        _ = [m async for m in wrong.list()]
    assert info.value.status == 403  # type: ignore[attr-defined]
    assert "hf_wrong" not in str(info.value) and "hf_wrong" not in repr(wrong)
    good = open_store(url, opts(hub, token="hf_good"))
    assert await good.get("data/big.bin") == BIG
    assert len([m async for m in good.list()]) == 7
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    from_env = open_store(url, opts(hub))
    assert await from_env.get("README.md") == SMALL
    no_token = open_store(url, opts(hub, token=False))
    with pytest.raises(StorePermissionError):
        await no_token.head("README.md")
    for s in (anonymous, wrong, good, from_env, no_token):
        await s.aclose()


async def test_endpoint_from_environment(
    hub: HubServer, repo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(hub, repo_id)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint + "/")
    store = open_store(f"hf://datasets/{repo_id}")
    assert await store.get("README.md") == SMALL
    await store.aclose()


async def test_read_only(hub: HubServer, repo_id: str, tmp_path: Path) -> None:
    fill(hub, repo_id)
    store = open_store(f"hf://datasets/{repo_id}", opts(hub))
    with pytest.raises(StorePermissionError, match="read-only"):
        await store.put("new.txt", b"x")
    (tmp_path / "f").write_bytes(b"x" * 100)
    with pytest.raises(StorePermissionError, match="read-only"):
        await store.put_file("new.txt", tmp_path / "f")
    with pytest.raises(StorePermissionError, match="read-only"):
        await store.delete("README.md")
    assert await store.get("README.md") == SMALL
    await store.aclose()


async def test_transient_errors_are_retried(hub: HubServer, repo_id: str) -> None:
    fill(hub, repo_id)
    store = open_store(f"hf://datasets/{repo_id}", opts(hub))
    hub.fail_next[:] = [503, 429]
    assert await store.get("README.md") == SMALL
    hub.fail_next[:] = [502]
    assert [m.key async for m in store.list("data/sub/")] == ["data/sub/b.txt", "data/sub/deeper/c.txt"]
    await store.aclose()


def test_unknown_option_and_pickle(hub: HubServer, repo_id: str) -> None:
    fill(hub, repo_id)
    with pytest.raises(ValueError, match="unknown hf:// option"):
        open_store(f"hf://datasets/{repo_id}", {"endpoint_url": hub.endpoint})
    store = open_store(f"hf://datasets/{repo_id}", opts(hub, token="hf_tok"))
    assert _loop.run(store.get("README.md")) == SMALL
    clone = pickle.loads(pickle.dumps(store))
    assert _loop.run(clone.get_range("data/big.bin", 1, 3)) == BIG[1:3]
    inner = clone.inner
    assert isinstance(inner, HFStore) and inner.endpoint == hub.endpoint and inner.revision == "main"
    _loop.run(store.aclose())
    _loop.run(clone.aclose())
    assert os.environ.get("HF_TOKEN") is None
