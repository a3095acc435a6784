import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The quick tier (`pytest -m "not slow"`, README) leaves out the tests that start processes (2-rank training, kills
# and resumes, launchers, servers, browsers, the docs build); CI runs everything. Marked here by name, so that the
# test files stay as they are; a test may also carry `@pytest.mark.slow` itself. tests/test_tiers.py checks that
# every name below exists.
SLOW_FILES = {"test_train.py", "test_fsdp.py", "test_gpu_paths.py", "test_serve_e2e.py", "test_browser.py", "test_doctor.py",
              "test_killed_rank.py"}
SLOW_TESTS = {
    "test_ddp.py::test_a_two_rank_run_with_a_missing_peer_ends_within_its_deadline",
    "test_ddp.py::test_flat_loop_two_gloo_ranks_keep_identical_weights_and_follow_one_rank_with_twice_the_batch",
    "test_bench.py::test_server_that_cannot_start_says_why",
    "test_bench.py::test_train_rows_carry_precision_and_compare_with_the_trainer_at_the_same_precision",
    "test_bench.py::test_precision_accuracy_is_shown_in_the_readme",
    "test_bench.py::test_strategies_run_measures_ddp_and_fsdp_and_keeps_the_other_tables",
    "test_publish.py::test_a_training_run_writes_cards_whose_numbers_match_its_summary",
    "test_publish.py::test_wheel_carries_the_license",
    "test_docs.py::test_nbdev_proc_nbs",
    "test_api.py::test_half_sent_body_gets_408_and_closed_client_logs_nothing",
    "test_api.py::test_stopping_the_batcher_answers_queued_requests_503_not_500",
    "test_slow_clients.py::test_sockets_that_never_send_their_headers_are_closed_and_real_requests_get_200",
    "test_slow_clients.py::test_the_port_is_held_while_the_model_loads",
}


@pytest.fixture(scope="module")
def ckpt(request, tmp_path_factory):
    """A tiny trained checkpoint folder (distrinews.train.tiny_checkpoint), one per test module; a module sets
    `CKPT_ARGS = dict(samples=..., epochs=...)` for another size. Module scope: made before any function-scoped fixture
    (a faked machine, a patched torch) runs."""
    from distrinews.train import tiny_checkpoint
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", **getattr(request.module, "CKPT_ARGS", {}))


def pytest_collection_modifyitems(config, items):
    for item in items:
        f = Path(str(item.fspath)).name
        if f in SLOW_FILES or f"{f}::{getattr(item, 'originalname', item.name)}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
