from shared.jobs import job_id_for, new_job_id_key

KEY = new_job_id_key()


def test_job_id_is_stable_32_hex():
    for key in (None, KEY):
        first = job_id_for("camp1", "contact1", key)
        assert first == job_id_for("camp1", "contact1", key)
        assert len(first) == 32 and int(first, 16) >= 0


def test_job_id_depends_on_both_parts_and_their_boundary():
    for key in (None, KEY):
        assert job_id_for("camp1", "c1", key) != job_id_for("camp2", "c1", key)
        assert job_id_for("camp1", "c1", key) != job_id_for("camp1", "c2", key)
        assert job_id_for("a", "bc", key) != job_id_for("ab", "c", key)


def test_without_the_campaigns_key_the_pair_does_not_give_the_job_id():
    keyed = job_id_for("camp1", "c1", KEY)
    assert keyed != job_id_for("camp1", "c1")
    assert keyed != job_id_for("camp1", "c1", new_job_id_key())


def test_the_completion_checks_memory_stays_bounded(monkeypatch):
    """It kept one entry a campaign for the worker's whole life."""
    from services.campaigns import usecases
    monkeypatch.setattr(usecases, "_last_check", {})
    monkeypatch.setattr(usecases, "_CHECKS_KEPT", 50)
    for n in range(500):
        usecases._note_check(f"campaign-{n}", float(n))
    assert len(usecases._last_check) <= 50
    assert "campaign-499" in usecases._last_check and "campaign-0" not in usecases._last_check
