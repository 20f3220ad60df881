"""`tessera train conversion`: learn the conversion model from the stored events.

Reads every event of the profile service's own database (TESSERA_DATABASE_URL,
or the embedded file in TESSERA_DATA_DIR), rebuilds the visits, fits the
model (`tessera.profiles.training`), reports how it does on a held-out share
of the visits, and stores it under a new version in `profiles_model`.
Running profile services use it from their next look (every
TESSERA_MODEL_POLL_S seconds), without a restart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TextIO

from tessera import db, migrations
from tessera.errors import TesseraError
from tessera.profiles.domain.conversion import SIGNALS
from tessera.profiles.server import NAME, ProfilesSettings
from tessera.profiles.storage.sql import ProfileStore


def version_at(at: dt.datetime) -> str:
    """The version of a model trained at `at`: `conv-<UTC timestamp>`."""
    return "conv-" + at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Train, report and store; 0 when a model was stored, 1 otherwise (said on `err`)."""
    try:
        from tqdm import tqdm

        from tessera.profiles import training
    except ImportError as error:
        print(
            f"training needs the `train` extra ({error.name} is missing): "
            "pip install 'tessera-profiles[train]'",
            file=err,
        )
        return 1
    if not 0 < args.held_out < 1:
        print(f"--held-out must be between 0 and 1, not {args.held_out}", file=err)
        return 1
    settings = ProfilesSettings()
    goal = args.goal or settings.conversion_goal
    database = db.open_database(settings, NAME)
    where = database.engine.url.render_as_string(hide_password=True)
    try:
        migrations.upgrade(database.engine, NAME)
        store = ProfileStore(database)
        total = store.count_events()
        if total == 0:
            print(f"no events stored in {where}: nothing to learn from", file=err)
            return 1
        reading = tqdm(store.events(), total=total, desc="reading events", unit=" events", file=err)
        examples = training.examples_from_events(reading, goal)
        reading.close()
        trained_at = dt.datetime.now(dt.UTC)
        with tqdm(total=2, desc="training", unit=" steps", file=err) as steps:

            def progress(message: str) -> None:
                # Called as each step (fit, judge) begins: the one before is done.
                if steps.desc != "training":
                    steps.update(1)
                steps.set_description(message)

            model, report = training.train(
                examples,
                version_at(trained_at),
                held_out_share=args.held_out,
                seed=args.seed,
                progress=progress,
            )
            steps.update(1)
        store.save_model(
            model,
            goal,
            trained_at,
            auc=report.auc,
            calibration_error=report.calibration_error,
            examples=report.examples,
            held_out=report.held_out,
        )
    except ValueError as error:
        print(f"cannot train: {error}", file=err)
        return 1
    except TesseraError as error:
        print(str(error), file=err)
        return 1
    finally:
        database.dispose()

    print(f"read {total} events from {where}", file=out)
    print(
        f"{report.examples} visits, {report.conversions} reached the goal {goal!r} "
        f"({report.conversions / report.examples:.1%})",
        file=out,
    )
    print(
        f"held out {report.held_out} visits ({args.held_out:.0%}): "
        f"AUC {report.auc:.3f}, expected calibration error {report.calibration_error:.3f}",
        file=out,
    )
    print(f"model {model.version}: intercept {model.intercept:+.4f}", file=out)
    for name in SIGNALS:
        print(f"  {name:<14} {model.weights.get(name, 0.0):+.4f}", file=out)
    print(
        f"stored in profiles_model; profile services use it within "
        f"{settings.model_poll_s:g} s (TESSERA_MODEL_POLL_S)",
        file=out,
    )
    return 0
