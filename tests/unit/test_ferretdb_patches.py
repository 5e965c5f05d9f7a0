"""make install's FerretDB patching (the built server is checked in
tests/integration/test_mongo.py)."""
import pytest

from devstack import ferretdb_patches, install


def _write_sources(root, texts: dict) -> None:
    for relative, text in texts.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _sources_and_their_patched_texts() -> tuple[dict, dict]:
    """Sources holding each patch's text once, and what the patches, applied
    in order, make of them. A text that an earlier patch writes (patch 10
    changes lines patches 2 and 3 wrote) is not in the sources."""
    sources: dict = {}
    patched: dict = {}
    for relative, old, new in ferretdb_patches.PATCHES:
        if old not in patched.get(relative, ""):
            sources[relative] = sources.get(relative, "package x\n") + old + "// between\n"
            patched[relative] = patched.get(relative, "package x\n") + old + "// between\n"
        patched[relative] = patched[relative].replace(old, new, 1)
    return sources, patched


def _sources_holding_every_patched_text() -> dict:
    return _sources_and_their_patched_texts()[0]


def test_every_patch_replaces_its_text_once(tmp_path):
    sources, patched = _sources_and_their_patched_texts()
    _write_sources(tmp_path, sources)

    install._patch_ferretdb(tmp_path)

    for relative, text in patched.items():
        assert (tmp_path / relative).read_text() == text
    patches = ferretdb_patches.PATCHES
    for number, (relative, old, new) in enumerate(patches):
        rewritten_later = any(later_old in new for later_relative, later_old, _ in patches[number + 1:]
                              if later_relative == relative)
        assert new in patched[relative] or rewritten_later
        assert old not in patched[relative] or old in new
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
