"""schedule.py: the warm-up + cosine curve, and what a resume with another --max-steps makes of it."""

import pytest

from wordformer.config import TrainConfig
from wordformer.errors import WordformerError
from wordformer.schedule import Schedule, describe_resume, learning_rate, saved_schedule

RUN = Schedule(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=600)


def test_a_fresh_schedule_is_the_learning_rate_function_exactly():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=600)
    schedule = Schedule.of(cfg)
    for step in range(0, 700, 7):
        assert schedule.rate(step) == learning_rate(step, lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=600)


def test_continue_keeps_the_saved_curve_and_stays_at_the_floor_past_its_end():
    resumed = RUN.resumed(600, 900, "continue")
    assert resumed == RUN
    assert [resumed.rate(s) for s in (600, 609, 899)] == [1e-4, 1e-4, 1e-4]
    # the recomputed curve the issue saw: from the floor at 599 back up to 3.6e-4 at 609
    recomputed = learning_rate(609, lr=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=900)  # the defaults
    assert recomputed == pytest.approx(3.6e-4, abs=1e-5)


def test_decay_goes_on_from_the_rate_reached_and_restart_from_the_peak():
    step = 300  # a run stopped half way (Ctrl-C), resumed to train longer
    reached = RUN.rate(step)
    decay = RUN.resumed(step, 900, "decay")
    assert decay.rate(step) == reached  # the step itself keeps its saved rate
    assert decay.rate(step + 1) == pytest.approx(reached)  # then no jump
    tail = [decay.rate(s) for s in range(step + 1, 901)]
    assert tail == sorted(tail, reverse=True) and tail[-1] == pytest.approx(1e-4)
    restart = RUN.resumed(step, 900, "restart")
    assert restart.rate(step + 1) == pytest.approx(1e-3) and restart.rate(900) == pytest.approx(1e-4)
    assert RUN.resumed(step, 900, "decay", min_lr=1e-5).rate(899) == pytest.approx(1e-5, rel=0.01)


def test_a_second_resume_continues_the_same_curve_from_the_checkpoint():
    first = RUN.resumed(600, 900, "restart")
    again = Schedule.from_dict(first.to_dict(), "x.ckpt")  # what the next resume reads back
    assert again == first
    assert [again.rate(s) for s in range(0, 1000, 13)] == [first.rate(s) for s in range(0, 1000, 13)]
    both = again.resumed(800, 1000, "decay")  # stopped at 800 of 900, now to 1000: the restart's tail stretched
    assert both.rate(650) == first.rate(650) and both.rate(801) == pytest.approx(first.rate(800))
    assert first.rate(801) > both.rate(900) > both.rate(999) > 1e-4


def test_older_checkpoints_without_a_recorded_schedule_use_their_options():
    cfg = TrainConfig(lr=2e-3, min_lr=2e-4, warmup_steps=5, max_steps=50)
    assert saved_schedule({}, cfg, "old.ckpt") == Schedule.of(cfg)
    with pytest.raises(WordformerError, match="damaged learning-rate schedule"):
        saved_schedule({"lr_schedule": {"lr": "x"}}, cfg, "bad.ckpt")


def test_the_resume_line_gives_the_numbers_of_each_choice():
    line = describe_resume(RUN, 600, 600, 900, "continue")
    assert "resuming at step 600 with --max-steps 900 (the run was set for 600)" in line
    assert "continues its saved schedule, 1.00e-04 at step 601 -> 1.00e-04 at step 899" in line
    assert "decay: 1.00e-04 at step 601" in line and "restart: 1.00e-03 at step 601" in line
    with pytest.raises(WordformerError, match="resume_schedule='later' must be one of: continue, decay, restart"):
        RUN.resumed(600, 900, "later")


def test_a_wsd_run_keeps_its_curve_through_the_checkpoint_and_a_resume():
    """The saved schedule knows it is warm-up-stable-decay: a resume that continues it follows the same rates."""
    from wordformer.config import TrainConfig
    from wordformer.schedule import Schedule, learning_rate

    train = TrainConfig(schedule="wsd", cooldown_fraction=0.5, lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    schedule = Schedule.of(train)
    expected = [learning_rate(s, lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100, schedule="wsd",
                              cooldown_fraction=0.5) for s in range(120)]
    assert [schedule.rate(s) for s in range(120)] == expected
    assert schedule.rate(40) == 1e-3 and schedule.rate(75) < 1e-3  # stable, then decaying
    again = Schedule.from_dict(schedule.to_dict(), "test")
    assert again == schedule
    assert [again.resumed(60, 200, "continue").rate(s) for s in range(120)] == expected
