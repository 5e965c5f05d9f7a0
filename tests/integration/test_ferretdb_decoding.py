"""The local FerretDB's document encoding and decoding, patched at build
(devstack/ferretdb_patches.py, patches 7 and 8), the prefix ranges it
pushes down (patch 10), its writes taking turns (patch 11) and a nested
field's equality read through an index (patch 12): FerretDB's
own tests of its sjson package, the checks that the fast paths decode
whatever they accept exactly as encoding/json does and encode exactly its
bytes, that a document stored with its schema last reads back as it was,
and the writer's tests pass on the source `make install` built.
(tests/integration/test_mongo.py checks documents through the server.)"""
import shutil
import subprocess

from devstack import config, ferretdb_patches


def _go_test(*args: str) -> subprocess.CompletedProcess:
    """`go test` on the FerretDB source `make install` built and patched."""
    go = shutil.which("go")
    assert go, "Go is needed to build the local FerretDB"
    src = config.FERRETDB_SRC_DIR
    for relative, text in ferretdb_patches.added_files().items():
        assert (src / relative).read_text() == text, f"{relative}: run make install"
    if not (src / ".git").exists():   # FerretDB's test helpers look for the repository's root
        subprocess.run(["git", "init", "-q"], cwd=src, check=True)
    run = subprocess.run([go, "test", "-count=1", "-v", *args], cwd=src, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run


def test_the_patched_sjson_package_passes_its_own_tests_and_the_fast_path_checks():
    run = _go_test("./internal/handler/sjson/")
    assert "--- PASS: TestFastPathsOnDocumentsFerretDBWrites" in run.stdout
    assert "--- PASS: FuzzFastPaths" in run.stdout
    assert "--- PASS: TestMarshalStringAsEncodingJSON" in run.stdout
    assert "--- PASS: FuzzMarshalString" in run.stdout
    assert "--- PASS: TestMarshalPutsTheSchemaLast" in run.stdout
    assert "--- PASS: TestMarshalUnmarshal/Filled" in run.stdout


def test_a_prefix_range_is_pushed_down_only_where_no_match_can_be_missed():
    """Patch 10's checks: which conditions are prefix ranges, that every
    character the encoder writes as is (and no other) may be in a pushed
    prefix, and that the stored text of any string in the range is within
    the SQL bounds."""
    run = _go_test("-run", "PrefixRange", "./internal/backends/sqlite/")
    for name in ("TestPrefixRangeAccepts", "TestPrefixRangeRejects", "TestPrefixRangeAllRunes",
                 "TestPrefixRangeNoMiss", "TestFieldTermsPrefixRange"):
        assert f"--- PASS: {name}" in run.stdout, name


def test_a_nested_fields_equality_reads_every_match_through_its_index():
    """Patch 12's checks (nested_field_test.go): which paths and values are
    pushed down, the expressions an index keeps, and, on a real SQLite
    database, that a query for `fields.city` reads exactly the account's
    documents with that city or an array on the way (every one FerretDB's
    filter matches among them), through both fields of the `(account_id,
    fields.city)` index; and how many matches a page reads first."""
    run = _go_test("-run", "Nested|SearchFirst", "./internal/backends/sqlite/")
    for name in ("TestNestedFieldColumns", "TestFieldTermsNestedEquality",
                 "TestNestedEqualityReadsEveryMatchThroughTheIndex", "TestSearchFirstBound"):
        assert f"--- PASS: {name}" in run.stdout, name


def test_a_databases_writes_take_turns_on_one_connection():
    """Patch 11's checks (writer_test.go): concurrent writes never meet
    SQLite's lock, a failed transaction or a cancelled wait gives the turn
    back, a pool of one connection stays free for reads, a cancelled
    transaction is rolled back before the next write runs, a failed COMMIT
    does not leave later writes inside its transaction, and writes after
    Close fail."""
    run = _go_test("./internal/util/fsql/")
    for name in ("TestConcurrentWritesTakeTurns", "TestAFailedTransactionGivesTheTurnBack",
                 "TestAWaitingWriteEndsWithItsContext", "TestAPoolOfOneStaysFreeForReads",
                 "TestACancelledTransactionEndsBeforeTheNextWrite",
                 "TestAFailedCommitDoesNotSwallowLaterWrites", "TestWritesAfterCloseFail"):
        assert f"--- PASS: {name}" in run.stdout, name
