"""make install's FerretDB patching (the built server is checked in
tests/integration/test_mongo.py)."""
import pytest

from devstack import ferretdb_patches, install


def _write_sources(root, texts: dict) -> None:
    for relative, text in texts.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _sources_holding_every_patched_text() -> dict:
    sources: dict = {}
    for relative, old, _ in ferretdb_patches.PATCHES:
        sources[relative] = sources.get(relative, "package x\n") + old + "// between\n"
    return sources


def test_every_patch_replaces_its_text_once(tmp_path):
    _write_sources(tmp_path, _sources_holding_every_patched_text())

    install._patch_ferretdb(tmp_path)

    for relative, old, new in ferretdb_patches.PATCHES:
        text = (tmp_path / relative).read_text()
        assert new in text
        assert old not in text or old in new
    added = ferretdb_patches.added_files()
    assert {"internal/handler/sjson/fastdecode.go", "internal/handler/sjson/fastencode.go"} <= set(added)
    for relative, text in added.items():
        assert (tmp_path / relative).read_text() == text


def test_a_source_without_the_expected_text_stops_the_build(tmp_path, capsys):
    _write_sources(tmp_path, {relative: "package x\n" for relative, _, _ in ferretdb_patches.PATCHES})
    with pytest.raises(SystemExit):
        install._patch_ferretdb(tmp_path)
    assert "Cannot patch FerretDB" in capsys.readouterr().err


def test_an_added_file_that_exists_already_stops_the_build(tmp_path, capsys):
    clash = next(iter(ferretdb_patches.added_files()))
    _write_sources(tmp_path, {**_sources_holding_every_patched_text(), clash: "package sjson\n"})
    with pytest.raises(SystemExit):
        install._patch_ferretdb(tmp_path)
    assert f"{clash} exists already" in capsys.readouterr().err


def test_the_build_stamp_changes_with_an_added_file(monkeypatch):
    before = install._ferretdb_patches_stamp()
    files = ferretdb_patches.added_files()
    changed = {**files, next(iter(files)): "package sjson // changed\n"}
    monkeypatch.setattr(ferretdb_patches, "added_files", lambda: changed)
    assert install._ferretdb_patches_stamp() != before
