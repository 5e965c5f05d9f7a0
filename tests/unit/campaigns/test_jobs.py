from shared.jobs import job_id_for


def test_job_id_is_stable_32_hex():
    first = job_id_for("camp1", "contact1")
    assert first == job_id_for("camp1", "contact1")
    assert len(first) == 32 and int(first, 16) >= 0


def test_job_id_depends_on_both_parts_and_their_boundary():
    assert job_id_for("camp1", "c1") != job_id_for("camp2", "c1")
    assert job_id_for("camp1", "c1") != job_id_for("camp1", "c2")
    assert job_id_for("a", "bc") != job_id_for("ab", "c")
