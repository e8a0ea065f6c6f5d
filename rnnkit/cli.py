"""The ``rnnkit`` command.

Each subcommand is a small function that parses its flags and calls the library; heavy imports happen
inside the subcommand so that ``rnnkit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnnkit import __version__


class CommandError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2."""


def _cmd_demo(args: argparse.Namespace) -> int:
    from rnnkit.demo import run_demo

    run_demo(out=Path(args.out), time_budget=args.time_budget, seed=args.seed, quick=args.quick)
    return 0


def _benchmarks_package():
    """Import the ``benchmarks`` folder that sits beside the package in a source checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__init__.py").exists():
        raise CommandError("the benchmarks/ folder is not beside the rnnkit package: run from a source checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import benchmarks

    return benchmarks


_BENCHMARKS = ("layers", "seq2seq", "minimal", "linear")


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    _benchmarks_package()
    names = _BENCHMARKS if args.name == "all" else (args.name,)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        module.main(["--quick"] if args.quick else [])
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from rnnkit.fast import doctor

    print(doctor())
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from rnnkit.data import catalog

    if args.data_command == "list":
        print(catalog.format_listing())
    elif args.data_command == "fetch":
        for name in args.names:
            paths = catalog.fetch(name)
            print(f"{name}: {paths}")
    return 0


# --------------------------------------------------------------------------------------------------------
# train / eval / generate / translate / predict: generic over the task modules (rnnkit.tasks)
# --------------------------------------------------------------------------------------------------------

# Settings whose default is None, so their type cannot be read off the default.
_NONE_DEFAULT_TYPES = {"max_steps": int, "time_budget": float, "patience": int, "eval_every": int,
                       "checkpoint_every": int, "cosine_steps": int, "cosine_seconds": float, "decay_start": int,
                       "clip_grad_norm": float, "valid": str, "test": str, "cache_dir": str, "progress": bool,
                       "season": int, "column": str, "select_metric": str}
_SKIPPED_FLAGS = {"betas"}  # settable from a config file only
ENSEMBLE_HELP = ("another translation run whose model decodes with RUN_DIR's as one ensemble, their probabilities "
                 "averaged at each step (repeatable; sources and decoding settings are RUN_DIR's)")


def _task_parser(task: str, module) -> argparse.ArgumentParser:
    from rnnkit.tasks import TRAINING_HELP, TRAINING_KEYS

    parser = argparse.ArgumentParser(
        prog=f"rnnkit train {task}",
        usage=f"rnnkit train {task} --data SOURCE [--out RUN_DIR] [--config FILE] [settings]",
        description=(module.__doc__ or "").strip().split("\n\n")[0],
        epilog="Settings come from the task's defaults, then --config FILE (TOML or YAML, a flat table of the "
               "same names with underscores), then flags. Training stops when validation has not improved for "
               "--patience evaluations, or at --epochs, --max-steps or --time-budget (seconds), whichever comes "
               "first; --resume RUN_DIR continues a stopped run exactly.",
    )
    parser.add_argument("--out", help=f"run directory (default: runs/{task})")
    parser.add_argument("--config", help="TOML/YAML file of settings")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="data-parallel training in N processes on this machine (taken before the other flags)")
    task_help = getattr(module, "HELP", {})
    groups = {"task": parser.add_argument_group(f"{task} settings"),
              "training": parser.add_argument_group("training settings (rnnkit.training.TrainingConfig)")}
    for key, default in module.DEFAULTS.items():
        if key in _SKIPPED_FLAGS:
            continue
        flag = "--" + key.replace("_", "-")
        group = groups["training" if key in TRAINING_KEYS else "task"]
        kind = type(default) if default is not None else _NONE_DEFAULT_TYPES.get(key, str)
        text = task_help.get(key, TRAINING_HELP.get(key, "")) + (
            f" (default: {default})" if default not in (None, "") else "")
        if key == "data":
            text = "training data: a file or a catalog name (rnnkit data list)" + (
                f" (default: {default})" if default else "")
        if kind is bool:
            group.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        else:
            group.add_argument(flag, dest=key, type=kind, default=argparse.SUPPRESS, help=text, metavar=key.upper())
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import read_config
    from rnnkit.distributed import make_trainer
    from rnnkit.tasks import read_config_file, resolve_settings, task_module, training_settings

    rest, nproc = _pop_nproc(args.rest)
    if nproc > 1:
        return _launch_processes(nproc, ["train", args.task, *rest])
    module = task_module(args.task)
    options = vars(_task_parser(args.task, module).parse_args(rest))
    out, config_file, resume, overwrite = (options.pop(k) for k in ("out", "config", "resume", "overwrite"))
    options.pop("nproc")  # taken out of the arguments above; here for --help
    given: dict = {}
    if resume:
        saved = read_config(resume)
        if saved.get("task") != args.task:
            raise CommandError(f"{resume} holds a {saved.get('task')!r} run, not {args.task}")
        given.update(saved.get("settings", {}))
        out = resume
    if config_file:
        given.update(read_config_file(config_file))
    given.update(options)
    settings = resolve_settings(args.task, given, source=config_file or "the command line")
    if not settings.get("data"):
        raise CommandError(f"--data is required: a {args.task} file or a catalog name (rnnkit data list)")
    run_dir = Path(out or f"runs/{args.task}")
    task, run_config = module.prepare(settings, run_dir)
    trainer = make_trainer(task, run_dir, training_settings(settings), run_config=run_config)
    result = trainer.resume() if resume else trainer.train(overwrite=overwrite)
    if getattr(trainer, "rank", 0) != 0:
        return 0  # rank 0 writes the report and prints the summary
    from rnnkit.report import write_run_report
    from rnnkit.tasks import evaluate_test

    tested = evaluate_test(run_dir)  # the best weights on the run's test source, if it has one
    report = write_run_report(run_dir)
    summary = {"run_dir": str(run_dir), "report": str(report), "stop_reason": result.stop_reason, "steps": result.step,
               "best_" + trainer.primary_metric: result.best_metric,
               "last_metrics": result.last_metrics,
               "test_source": tested[0] if tested else None, "test_metrics": tested[1] if tested else None}
    _print_json(summary)
    return 0


def _pop_nproc(rest: list[str]) -> tuple[list[str], int]:
    """Take ``--nproc N`` (or ``--nproc=N``) out of the train arguments; 1 when absent."""
    kept, nproc, index = [], 1, 0
    while index < len(rest):
        word = rest[index]
        if word == "--nproc" or word.startswith("--nproc="):
            value = word.partition("=")[2] if "=" in word else (rest[index + 1] if index + 1 < len(rest) else "")
            index += 1 if "=" in word else 2
            if not value.isdigit() or int(value) < 1:
                raise CommandError(f"--nproc takes a number of processes >= 1, got {value!r}")
            nproc = int(value)
            continue
        kept.append(word)
        index += 1
    return kept, nproc


def _launch_processes(nproc: int, argv: list[str]) -> int:
    """``rnnkit train ... --nproc N``: the same command in N processes on this machine, through torchrun."""
    import subprocess

    from rnnkit.distributed import launch_command

    return subprocess.call(launch_command(nproc, argv))


def _runner(run_dir: str):
    from rnnkit.tasks import load_run

    runner = load_run(run_dir)
    return runner.task, runner


def _ensemble_runner(args: argparse.Namespace):
    """The run's runner; with ``--ensemble``, the translation runs' models decoding as one."""
    if not args.ensemble:
        return _runner(args.run_dir)
    from rnnkit.tasks.translate import load_ensemble

    return "translate", load_ensemble([args.run_dir, *args.ensemble])  # each must be a translation run


def _cmd_eval(args: argparse.Namespace) -> int:
    _, runner = _ensemble_runner(args)
    source, split = runner.evaluation_source(args.data, args.split)
    _print_json({"source": source, "split": split, **runner.evaluate(args.data, split=args.split)})
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import BEST_PREFIX, STEP_PREFIX, average_checkpoints, kept_checkpoints, read_weights_file
    from rnnkit.tasks import load_run

    run_dir = Path(args.run_dir)
    count = args.last or args.best
    if count < 1:
        raise CommandError(f"--last/--best take a number of checkpoints >= 1, got {count}")
    if args.last:
        kept = [name for _, name in kept_checkpoints(run_dir, STEP_PREFIX)]
        flag = "--keep-last N"
    else:  # the best by their recorded metric
        kept = [name for _, name in kept_checkpoints(run_dir, BEST_PREFIX)]
        metadata = {name: read_weights_file(run_dir / "checkpoints" / name / "model.safetensors")[1]
                    for name in kept}
        kept.sort(key=lambda name: float(metadata[name]["value"]) * (
            -1 if metadata[name].get("higher_is_better") == "True" else 1))
        flag = "--keep-best N"
    if len(kept) < count:
        raise CommandError(f"{run_dir} keeps {len(kept)} such checkpoints, fewer than {count}; train with {flag} "
                           f"(N >= {count}) to keep them")
    names = kept[:count]
    out = Path(args.out or run_dir / f"average-{'last' if args.last else 'best'}-{count}")
    average_checkpoints(run_dir, names, out)
    summary: dict = {"out": str(out), "averaged": names}
    if not args.no_eval:  # the averaged model next to the run's best, on the run's validation source
        summary["valid"] = load_run(out).evaluate(split="valid")
        summary["valid_best"] = load_run(run_dir).evaluate(split="valid")
    _print_json(summary)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    task, runner = _runner(args.run_dir)
    if task != "lm":
        raise CommandError(f"generate needs a language model run; {args.run_dir} is a {task} run")
    print(runner.generate(args.prompt, length=args.length, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed))
    return 0


def _input_lines() -> list[str]:
    return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]


def _cmd_translate(args: argparse.Namespace) -> int:
    task, runner = _ensemble_runner(args)
    if task != "translate":
        raise CommandError(f"translate needs a translation run; {args.run_dir} is a {task} run")
    lines = _input_lines()
    for start in range(0, len(lines), 64):
        chunk = lines[start:start + 64]
        for options in runner.translate(chunk, beam_size=args.beam, n_best=args.n_best, alpha=args.alpha):
            if args.n_best == 1:
                print(options[0]["text"], flush=True)
            else:
                print("\t".join(f"{o['text']}\t{o['score']:.4f}" for o in options), flush=True)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    task, runner = _runner(args.run_dir)
    if task not in ("classify", "tag"):
        raise CommandError(f"predict is for classify and tag runs; {args.run_dir} is a {task} run")
    for prediction in runner.predict(_input_lines()):
        print(" ".join(prediction) if isinstance(prediction, list) else prediction, flush=True)
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from rnnkit.experiments.registry import EXPERIMENTS, run

    if args.name not in EXPERIMENTS:
        raise CommandError(f"unknown experiment {args.name!r}; known: {', '.join(EXPERIMENTS)}")
    out = Path(args.out or f"runs/experiments/{args.name}")
    figures = run(args.name, quick=args.quick, out=out, seed=args.seed)
    _print_json(figures)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from rnnkit.export import export_run

    for path in export_run(args.run_dir, args.out):
        print(path)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from rnnkit.server.app import serve_main

    for run_dir in args.run_dirs:
        if not (Path(run_dir) / "config.json").is_file():
            raise CommandError(f"{run_dir} is not a run directory (it has no config.json)")
    serve_main(args.run_dirs, host=args.host, port=args.port, allow_hosts=args.allow_host)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="Recurrent sequence models: train, evaluate, decode, look inside. "
                    "Start with `rnnkit demo`.",
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="train an attention seq2seq on multilingual dates -> ISO (about 5 minutes)",
                          description="Generate the multilingual `dates` dataset (Babel CLDR), train a Luong-attention "
                                      "GRU seq2seq on it, print held-out exact-match accuracy and beam-search "
                                      "translations of unseen dates, and write a report with training curves and an "
                                      "attention heatmap.")
    demo.add_argument("--out", default="runs/demo", help="run directory to write (default: runs/demo)")
    demo.add_argument("--time-budget", type=float, default=270.0, help="training time limit in seconds (default 270)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a tiny run that only shows the pipeline works")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="speed benchmarks against torch.nn, side by side in one process")
    bench.add_argument("name", nargs="?", default="all", choices=("all", *_BENCHMARKS))
    bench.add_argument("--quick", action="store_true", help="fewer repeats")
    bench.set_defaults(func=_cmd_bench)

    doctor = sub.add_parser("doctor", help="how the fast path runs here: compiler, flags, kernel cache, active paths")
    doctor.set_defaults(func=_cmd_doctor)

    from rnnkit.tasks import TASK_NAMES

    train = sub.add_parser("train", help="train a model: lm | classify | tag | translate | forecast",
                           description="rnnkit train TASK --data SOURCE [settings] [--nproc N]; `rnnkit train "
                                       "TASK --help` lists the task's settings. --nproc N trains data-parallel in N "
                                       "processes on this machine (torchrun); for several machines run "
                                       "torchrun yourself (README).", add_help=False)
    train.add_argument("task", choices=TASK_NAMES, metavar="TASK", nargs="?")
    train.add_argument("rest", nargs=argparse.REMAINDER)
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser("eval", help="evaluate a run on held-out data; prints metrics as JSON")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--data", help="a file (scored whole) or a catalog name (default: the run's own "
                                         "sources, as recorded in its config.json)")
    evaluate.add_argument("--split", default=None, choices=("train", "valid", "test"),
                          help="the run's own source of this split, or this split of a catalog --data "
                               "(default: test)")
    evaluate.add_argument("--ensemble", action="append", default=[], metavar="RUN_DIR", help=ENSEMBLE_HELP)
    evaluate.set_defaults(func=_cmd_eval)

    average = sub.add_parser("average", help="average the weights of a run's last or best checkpoints into a new "
                                             "run directory (checkpoint averaging)",
                             description="Average the weights of the N latest checkpoints (kept with --keep-last) or "
                                         "of the N best evaluations (kept with --keep-best) of RUN_DIR into --out, a "
                                         "run directory that loads like RUN_DIR; prints the averaged model's "
                                         "validation metrics next to the run's best.")
    average.add_argument("run_dir", metavar="RUN_DIR")
    which = average.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, metavar="N", help="the N latest kept checkpoints")
    which.add_argument("--best", type=int, metavar="N", help="the N best kept checkpoints")
    average.add_argument("--out", help="the new run directory (default: RUN_DIR/average-last-N or -best-N)")
    average.add_argument("--no-eval", action="store_true", help="do not score the averaged model on validation")
    average.set_defaults(func=_cmd_average)

    generate = sub.add_parser("generate", help="generate text from a language model run")
    generate.add_argument("run_dir", metavar="RUN_DIR")
    generate.add_argument("--prompt", default="", help="text to continue")
    generate.add_argument("--length", type=int, default=200, help="tokens to generate (default 200)")
    generate.add_argument("--temperature", type=float, default=0.8)
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--seed", type=int, default=None)
    generate.set_defaults(func=_cmd_generate)

    translate = sub.add_parser("translate", help="translate stdin -> stdout, one sentence a line")
    translate.add_argument("run_dir", metavar="RUN_DIR")
    translate.add_argument("--beam", type=int, default=None,
                           help="beam size (1 = greedy; default: the run's beam_size)")
    translate.add_argument("--n-best", type=int, default=1, help="print the N best, tab-separated with scores")
    translate.add_argument("--alpha", type=float, default=None,
                           help="length normalisation exponent (default: the run's alpha)")
    translate.add_argument("--ensemble", action="append", default=[], metavar="RUN_DIR", help=ENSEMBLE_HELP)
    translate.set_defaults(func=_cmd_translate)

    predict = sub.add_parser("predict", help="classify or tag stdin -> stdout, one input a line")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.set_defaults(func=_cmd_predict)

    experiment = sub.add_parser("experiment", help="classic experiments (adding, copy-memory, vanishing-gradients, "
                                                   "attention-length, ...), each with a report")
    experiment.add_argument("name", metavar="NAME")
    experiment.add_argument("--quick", action="store_true", help="the small setting used in CI")
    experiment.add_argument("--out", help="output directory (default runs/experiments/NAME)")
    experiment.add_argument("--seed", type=int, default=0)
    experiment.set_defaults(func=_cmd_experiment)

    export = sub.add_parser("export", help="export a run's model to ONNX (every part: encoder, decoder step, ...)")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", default="onnx", choices=("onnx",), help="export format (default: onnx)")
    export.add_argument("--out", help="output directory (default: RUN_DIR/onnx)")
    export.set_defaults(func=_cmd_export)

    serve = sub.add_parser("serve", help="serve runs over an HTTP API and the web explorer page")
    serve.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directories to load (any number)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests for this host name (repeatable; .example.org: and its "
                            "subdomains; '*': any). Default: localhost, loopback addresses and --host only, "
                            "which stops DNS-rebinding pages from reaching the server")
    serve.set_defaults(func=_cmd_serve)

    data = sub.add_parser("data", help="the dataset catalog: list and fetch offline datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    data_sub.add_parser("list", help="list the datasets with source, licence, size and splits")
    fetch = data_sub.add_parser("fetch", help="fetch datasets into the cache (RNNKIT_CACHE)")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    data.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and (args.task is None or args.task in ("-h", "--help")):
        parser.parse_args(["train", "--help"] if args.task is None else ["--help"])
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CommandError as err:
        print(f"rnnkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # the library's user-facing errors (bad data, unknown names, bad values)
        print(f"rnnkit {args.command}: error: {err}", file=sys.stderr)
        return 2


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def run() -> None:
    """The ``rnnkit`` command: subnormal floats flushed to zero for the whole process first, before any
    computation creates torch's worker threads (rnnkit.denormals says why), then :func:`main`."""
    from rnnkit.denormals import flush_denormals

    flush_denormals()
    raise SystemExit(main())


if __name__ == "__main__":
    run()
