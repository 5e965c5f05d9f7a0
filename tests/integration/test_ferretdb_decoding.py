"""The local FerretDB's document encoding and decoding, patched at build
(devstack/ferretdb_patches.py, patches 7 and 8): FerretDB's own tests of its
sjson package, the checks that the fast paths decode whatever they accept
exactly as encoding/json does and encode exactly its bytes, and that a
document stored with its schema last reads back as it was, pass on the
source `make install` built. (tests/integration/test_mongo.py checks
documents through the server.)"""
import shutil
import subprocess

from devstack import config, ferretdb_patches


def test_the_patched_sjson_package_passes_its_own_tests_and_the_fast_path_checks():
    go = shutil.which("go")
    assert go, "Go is needed to build the local FerretDB"
    src = config.FERRETDB_SRC_DIR
    for relative, text in ferretdb_patches.added_files().items():
        assert (src / relative).read_text() == text, f"{relative}: run make install"
    run = subprocess.run([go, "test", "-count=1", "-v", "./internal/handler/sjson/"], cwd=src,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "--- PASS: TestFastPathsOnDocumentsFerretDBWrites" in run.stdout
    assert "--- PASS: FuzzFastPaths" in run.stdout
    assert "--- PASS: TestMarshalStringAsEncodingJSON" in run.stdout
    assert "--- PASS: FuzzMarshalString" in run.stdout
    assert "--- PASS: TestMarshalPutsTheSchemaLast" in run.stdout
    assert "--- PASS: TestMarshalUnmarshal/Filled" in run.stdout
