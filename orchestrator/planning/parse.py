"""Reading a plan: YAML text in, a validated `Plan` out, or one `PlanError` line naming the
file, the line, the key path and what was expected, e.g.
`plans/x.yaml:14 budget.flops: expected a number like 1e12, got "lots"`. Only this module
sees raw YAML (`yaml.safe_load` semantics: no arbitrary objects).

Two ways to say which runs to make (exactly one per plan):
- `grid`: an explicit IsoFLOP grid, model shapes x compute levels, each shape at every
  level or at the `levels` it names (plans/local.yaml);
- `budget` + `seed_grid`: a compute budget the planner turns into log-spaced compute
  levels with model sizes around a prior N_opt(C), holding a share back for adaptive
  rounds (plans/chinchilla.yaml). `expand.py` expands both into runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import yaml

from orchestrator.laws.record import FitRecord
from orchestrator.planning.expand import expand_plan
from orchestrator.planning.hardware import ACCELERATORS, flops_for_gpu_hours
from orchestrator.planning.hparams import RULES
from orchestrator.planning.parse_data import parse_data, parse_fit_loss
from orchestrator.planning.plan import (
    Adaptive,
    BackendChoice,
    Budget,
    Grid,
    GridSize,
    Hardware,
    Plan,
    Resources,
    Retries,
    SeedGrid,
    Train,
)
from orchestrator.planning.plan_paths import beside, stored_text
from orchestrator.planning.reader import PlanError, Reader, key_lines
from workers.spec import (
    SINK_KINDS,
    SINK_PACKAGES,
    LrSchedule,
    SinkSpec,
    SpecError,
)

# 1e30 FLOPs is some 10^4 x the largest training run to date: anything above is a typo.
_MAX_FLOPS = 1e30

_TOP = {
    "name",
    "store",
    "flops_method",
    "data",
    "model",
    "grid",
    "budget",
    "seed_grid",
    "hardware",
    "train",
    "resources",
    "retries",
    "backend",
    "report",
    "adaptive",
    "logging",
    "fit",
}
# Each sink's keys beside `kind` (workers/spec.py SinkSpec).
_SINK_KEYS = {
    "tensorboard": {"dir"},
    "mlflow": {"tracking_uri"},
    "wandb": {"project", "mode", "dir"},
}


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file, including that every run it makes is valid.

    Raises:
        PlanError: naming the file, line and key of the first problem.
    """
    path = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, or a NUL in the path
        raise PlanError(
            f"{path}: cannot read plan: {getattr(err, 'strerror', None) or err}"
        ) from err
    return parse_plan(text, path=path)


def parse_plan(text: str, *, path: str, store: str | None = None) -> Plan:
    """Validate plan `text` (read from `path`, named in errors); `store` overrides its root."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PlanError(
            f"{path}:{_yaml_error_line(err, text)} not valid YAML: "
            f"{_one_line(getattr(err, 'problem', None) or err)}"
        ) from err
    except RecursionError as err:
        raise PlanError(f"{path}:1 not valid YAML: nested too deeply") from err
    r = Reader(path, key_lines(node) if node is not None else {})
    top = r.mapping(raw, ())
    r.only(top, (), _TOP)
    name = r.get(top, ("name",), str)
    if not (
        0 < len(name) <= 64 and name.replace("-", "").replace("_", "").isalnum() and name.isascii()
    ):
        r.fail(("name",), f"expected 1-64 letters, digits, '-' or '_', got {name!r}")

    model = r.section(top, "model", {"vocab", "seq_len", "pos", "tied"})
    shape_defaults = {
        "vocab": r.get(model, ("model", "vocab"), int, 256, positive=True, at_most=10**7),
        "seq_len": r.get(model, ("model", "seq_len"), int, 64, positive=True, at_most=10**6),
        "pos": r.choice(model, ("model", "pos"), ("rope", "learned"), "rope"),
        "tied": r.get(model, ("model", "tied"), bool, True),
    }
    train = _train(r, r.section(top, "train", set(_TRAIN_KEYS)))
    hardware = _hardware(
        r,
        r.section(
            top,
            "hardware",
            {
                "accelerator",
                "gpus_per_node",
                "max_gpus_per_run",
                "mfu",
                "memory_safety",
                "max_wall_hours",
                "allow_offload",
            },
        ),
    )
    has_grid, has_budget = "grid" in top, "budget" in top
    if has_grid == ("seed_grid" in top):
        r.fail(
            ("grid",),
            "expected exactly one of `grid` (explicit sizes) or `seed_grid` "
            "(sizes planned from the budget)",
        )
    budget = _budget(r, top, hardware) if has_budget else None
    if "seed_grid" in top and budget is None:
        r.fail(("budget",), "missing required section (a seed_grid is planned from a budget)")

    res = r.section(top, "resources", {"cpus_per_rank", "gpus_per_rank", "address"})
    report = r.section(top, "report", {"flops"})
    retries = r.section(top, "retries", {"preemption", "failure", "stall_minutes"})
    be = r.section(
        top,
        "backend",
        {"kind", "slots", "flops_per_s", "preempt_rate", "fail_rate", "noise", "curves"},
    )
    plan = Plan(
        path=path,
        text=text,
        name=name,
        store=store or r.get(top, ("store",), str, "./experiments"),
        flops_method=r.choice(top, ("flops_method",), ("6nd", "6nd_total", "chinchilla"), "6nd"),
        grid=_grid(r, top, train) if has_grid else None,
        budget=budget,
        seed_grid=_seed_grid(r, top) if not has_grid else None,
        hardware=hardware,
        shape_defaults=shape_defaults,
        data=parse_data(r, top, path),
        train=train,
        resources=Resources(
            cpus_per_rank=r.get(
                res, ("resources", "cpus_per_rank"), int, 1, positive=True, at_most=1024
            ),
            gpus_per_rank=r.choice(res, ("resources", "gpus_per_rank"), (0, 1), 0),
            address=r.get(res, ("resources", "address"), str, None),
        ),
        retries=Retries(
            preemption=r.get(retries, ("retries", "preemption"), int, 3, at_least=0, at_most=1000),
            failure=r.get(retries, ("retries", "failure"), int, 1, at_least=0, at_most=1000),
            stall_s=60.0
            * r.number(
                retries.get("stall_minutes", 60.0),
                ("retries", "stall_minutes"),
                positive=True,
                at_most=1e6,
            ),
        ),
        backend=BackendChoice(
            kind=r.choice(be, ("backend", "kind"), ("ray", "simulated", "ray-simulated"), "ray"),
            slots=r.get(be, ("backend", "slots"), int, None, positive=True, at_most=10**6),
            flops_per_s=r.number(
                be.get("flops_per_s", 1e30), ("backend", "flops_per_s"), positive=True
            ),
            preempt_rate=r.fraction(be, ("backend", "preempt_rate"), 0.0),
            fail_rate=r.fraction(be, ("backend", "fail_rate"), 0.0),
            noise=r.number(be.get("noise", 0.01), ("backend", "noise"), at_least=0, at_most=1),
            curves=r.get(be, ("backend", "curves"), bool, True),
        ),
        report_flops=tuple(
            r.number(v, ("report", "flops", i), positive=True)
            for i, v in enumerate(r.get(report, ("report", "flops"), list, []))
        ),
        adaptive=_adaptive(r, top, budget) if "adaptive" in top else None,
    )
    plan = dataclasses.replace(
        plan, sinks=_sinks(r, top, plan), fit_loss=parse_fit_loss(r, top, plan.data)
    )
    # The text the experiment keeps: relative paths made absolute (see plan_paths).
    plan = dataclasses.replace(plan, text=stored_text(text, node, top, plan))
    # Expanding the plan checks what no single key can: shapes, batches, memory, budget.
    # The plan returned is the one expanded, so the study reuses this expansion.
    expand_plan(plan, reader=r)
    return plan


def _sinks(r: Reader, top: dict, plan: Plan) -> tuple[SinkSpec, ...]:
    """`logging.sinks`: a list of sink names or {kind: ..., options} mappings.

    Each sink's package must be importable here (the driver's environment is the
    workers' image), and a file sink on an object-storage experiment needs a `dir`.
    Relative paths (`dir`, a `sqlite:///` tracking URI) are taken from the plan's folder.
    """
    section = r.section(top, "logging", {"sinks"})
    items = r.get(section, ("logging", "sinks"), list, [])
    out, seen = [], set()
    for i, item in enumerate(items):
        key = ("logging", "sinks", i)
        raw = {"kind": item} if isinstance(item, str) else r.mapping(item, key)
        kind = r.choice(raw, (*key, "kind"), SINK_KINDS, None)
        r.only(raw, key, {"kind", *_SINK_KEYS[kind]})
        if kind in seen:
            r.fail(key, f"the {kind} sink is named twice")
        seen.add(kind)
        if importlib.util.find_spec(SINK_PACKAGES[kind]) is None:
            r.fail(
                (*key, "kind"),
                f"the {kind} sink needs the {SINK_PACKAGES[kind]!r} package, which is not "
                f"installed (pip install 'scaling-orch[{kind}]')",
            )
        options = {k: r.get(raw, (*key, k), str) for k in raw if k != "kind"}
        if "dir" in options:
            options["dir"] = beside(plan.path, options["dir"])
        uri = options.get("tracking_uri", "")
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            options["tracking_uri"] = f"sqlite:///{beside(plan.path, uri[len('sqlite:///') :])}"
        if kind != "mlflow" and "dir" not in options and "://" in plan.store:
            r.fail(key, f"a {kind} sink writes files: give it a `dir` (the store is not local)")
        try:
            sink = SinkSpec(kind=kind, experiment=plan.name, **options)
            sink.validate()
        except SpecError as err:
            r.fail(key, err.message)
        out.append(sink)
    return tuple(out)


def _yaml_error_line(err: yaml.YAMLError, text: str) -> int:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(err, "position", None)  # ReaderError: a character offset
    return text.count("\n", 0, position) + 1 if position is not None else 1


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


_TRAIN_KEYS = (
    "hparams",
    "global_batch",
    "micro_batch",
    "schedule",
    "weight_decay",
    "grad_clip",
    "seed",
    "precision",
    "eval_every_steps",
    "eval_batches",
    "log_every_steps",
    "checkpoint_every_steps",
    "zero_stage",
    "world_size",
)


def _train(r: Reader, t: dict) -> Train:
    k = ("train", "schedule")
    sched = r.section(
        t,
        "schedule",
        {"kind", "peak_lr", "warmup_frac", "cooldown_frac", "min_lr_frac"},
        prefix=("train",),
    )
    schedule = LrSchedule(
        kind=r.choice(sched, (*k, "kind"), ("cosine", "wsd", "constant"), "cosine"),
        peak_lr=r.number(sched.get("peak_lr", 3e-3), (*k, "peak_lr"), positive=True, at_most=10),
        warmup_frac=r.fraction(sched, (*k, "warmup_frac"), 0.05),
        cooldown_frac=r.fraction(sched, (*k, "cooldown_frac"), 0.2),
        min_lr_frac=r.fraction(sched, (*k, "min_lr_frac"), 0.1),
    )
    return Train(
        hparams=r.choice(t, ("train", "hparams"), RULES, "fixed"),
        global_batch=r.get(t, ("train", "global_batch"), int, 16, positive=True, at_most=2**24),
        micro_batch=r.get(t, ("train", "micro_batch"), int, None, positive=True, at_most=2**24),
        schedule=schedule,
        weight_decay=r.number(
            t.get("weight_decay", 0.1), ("train", "weight_decay"), at_least=0, at_most=10
        ),
        grad_clip=r.number(t.get("grad_clip", 1.0), ("train", "grad_clip"), at_least=0),
        seed=r.get(t, ("train", "seed"), int, 0, at_least=0, at_most=2**32 - 1),
        precision=r.choice(t, ("train", "precision"), ("fp32", "bf16"), "fp32"),
        eval_every_steps=r.get(t, ("train", "eval_every_steps"), int, 0, at_least=0),
        eval_batches=r.get(t, ("train", "eval_batches"), int, 8, positive=True, at_most=10**5),
        log_every_steps=r.get(t, ("train", "log_every_steps"), int, 10, positive=True),
        checkpoint_every_steps=r.get(t, ("train", "checkpoint_every_steps"), int, 0, at_least=0),
        zero_stage=r.choice(t, ("train", "zero_stage"), (0, 1, 2, 3), 0),
        world_size=r.get(t, ("train", "world_size"), int, 1, positive=True, at_most=2**16),
    )


def _hardware(r: Reader, h: dict) -> Hardware:
    k = ("hardware",)
    return Hardware(
        accelerator=r.choice(h, (*k, "accelerator"), tuple(ACCELERATORS), "cpu"),
        gpus_per_node=r.get(h, (*k, "gpus_per_node"), int, 8, positive=True, at_most=1024),
        max_gpus_per_run=r.get(h, (*k, "max_gpus_per_run"), int, 8, positive=True, at_most=2**16),
        mfu=r.fraction(h, (*k, "mfu"), 0.4, open_low=True),
        memory_safety=r.fraction(h, (*k, "memory_safety"), 0.9, open_low=True),
        max_wall_hours=(
            r.number(h["max_wall_hours"], (*k, "max_wall_hours"), positive=True)
            if h.get("max_wall_hours") is not None
            else None
        ),
        allow_offload=r.get(h, (*k, "allow_offload"), bool, False),
    )


def _budget(r: Reader, top: dict, hardware: Hardware) -> Budget:
    b = r.section(top, "budget", {"flops", "gpu_hours", "adaptive_share"})
    if ("flops" in b) == ("gpu_hours" in b):
        r.fail(("budget",), "expected exactly one of `flops` or `gpu_hours`")
    if "flops" in b:
        flops = r.number(b["flops"], ("budget", "flops"), positive=True, at_most=_MAX_FLOPS)
    else:
        hours = r.number(b["gpu_hours"], ("budget", "gpu_hours"), positive=True, at_most=1e12)
        flops = flops_for_gpu_hours(hours, ACCELERATORS[hardware.accelerator], mfu=hardware.mfu)
    share = r.fraction(b, ("budget", "adaptive_share"), 0.0)
    if share >= 1:
        r.fail(
            ("budget", "adaptive_share"),
            "expected a fraction below 1 (the seed grid needs some of the budget)",
        )
    return Budget(flops=flops, adaptive_share=share)


def _grid(r: Reader, top: dict, train: Train) -> Grid:
    g = r.section(top, "grid", {"compute_flops", "sizes"}, required=True)
    levels_raw = r.get(g, ("grid", "compute_flops"), list)
    if not levels_raw:
        r.fail(("grid", "compute_flops"), "expected at least one compute level")
    levels = tuple(
        r.number(v, ("grid", "compute_flops", i), positive=True, at_most=_MAX_FLOPS)
        for i, v in enumerate(levels_raw)
    )
    sizes_raw = r.get(g, ("grid", "sizes"), list)
    if not sizes_raw:
        r.fail(("grid", "sizes"), "expected at least one model size")
    sizes = []
    for i, item in enumerate(sizes_raw):
        key = ("grid", "sizes", i)
        m = r.mapping(item, key)
        r.only(m, key, {"n_layer", "d_model", "n_head", "world_size", "zero_stage", "levels"})
        size = GridSize(
            n_layer=r.get(m, (*key, "n_layer"), int, positive=True, at_most=1024),
            d_model=r.get(m, (*key, "d_model"), int, positive=True, at_most=2**17),
            n_head=r.get(m, (*key, "n_head"), int, positive=True, at_most=2**12),
            world_size=r.get(
                m, (*key, "world_size"), int, train.world_size, positive=True, at_most=2**16
            ),
            zero_stage=r.choice(m, (*key, "zero_stage"), (0, 1, 2, 3), train.zero_stage),
            levels=_size_levels(r, m, key, levels),
        )
        if size.d_model % size.n_head:
            r.fail(
                (*key, "n_head"), f"expected a divisor of d_model {size.d_model}, got {size.n_head}"
            )
        sizes.append(size)
    grid = Grid(compute_flops=levels, sizes=tuple(sizes))
    for i, level in enumerate(levels):
        if not grid.sizes_at(level):
            r.fail(
                ("grid", "compute_flops", i),
                f"no size runs at {level:.3g} FLOPs (every size names other `levels`)",
            )
    return grid


def _size_levels(r: Reader, m: dict, key: tuple, levels: tuple[float, ...]):
    """A size's `levels`: some of the grid's compute levels, each written as there."""
    if "levels" not in m:
        return None
    raw = r.get(m, (*key, "levels"), list)
    if not raw:
        r.fail((*key, "levels"), "expected at least one of the grid's compute_flops")
    chosen = []
    for j, v in enumerate(raw):
        value = r.number(v, (*key, "levels", j), positive=True, at_most=_MAX_FLOPS)
        # Levels are matched to the grid's within rounding, and stored as the grid's own
        # numbers, so that `level in size.levels` is exact.
        match = [c for c in levels if math.isclose(c, value, rel_tol=1e-9)]
        if not match:
            listed = ", ".join(f"{c:g}" for c in levels)
            r.fail((*key, "levels", j), f"expected one of compute_flops ({listed}), got {value:g}")
        chosen.append(match[0])
    return tuple(dict.fromkeys(chosen))


def _adaptive(r: Reader, top: dict, budget: Budget | None) -> Adaptive:
    k = ("adaptive",)
    a = r.section(
        top,
        "adaptive",
        {
            "strategy",
            "target",
            "stop",
            "batch",
            "repeat_seeds",
            "max_run_flops",
            "seed",
            "early_stop",
        },
    )
    if "seed_grid" not in top:
        r.fail(k, "adaptive rounds need a `seed_grid` (they choose among its kind of runs)")
    if budget is None or budget.adaptive_share <= 0:
        r.fail(k, "adaptive rounds need budget.adaptive_share > 0 (the compute they may spend)")
    target = r.section(
        a,
        "target",
        {"flops", "quantity", "level", "runs", "form", "form_error_floor"},
        required=True,
        prefix=k,
    )
    if "flops" not in target and "runs" not in target:
        r.fail(
            (*k, "target"),
            "expected `flops` (C*, for L_opt / N_opt there), `runs` (a list of {N, D} to "
            "predict), or both",
        )
    if "flops" not in target and "quantity" in target:
        r.fail(
            (*k, "target", "quantity"),
            "a quantity (L_opt / N_opt) is read at C*: give `target.flops` too",
        )
    target_form = r.choice(target, (*k, "target", "form"), ("chinchilla", "auto"), "chinchilla")
    floor = None
    if "form_error_floor" in target:
        floor = r.fraction(target, (*k, "target", "form_error_floor"), 0.0)
        if target_form != "auto":
            r.fail(
                (*k, "target", "form_error_floor"),
                "the floor widens AutoLaw's intervals: it needs `target.form: auto`",
            )
    stop = r.section(a, "stop", {"rel_width", "rounds"}, prefix=k)
    max_run = a.get("max_run_flops")
    # `early_stop: true` takes every default, a mapping sets some; absent or false: off.
    from orchestrator.planning.plan import EarlyStop

    early, ek = a.get("early_stop", False), (*k, "early_stop")
    if early is not None and not isinstance(early, bool):
        keys = {"rel_width", "off_frontier", "margin", "min_progress"}
        e, d = r.section(a, "early_stop", keys, prefix=k), EarlyStop()
        early = EarlyStop(
            rel_width=r.fraction(e, (*ek, "rel_width"), d.rel_width),
            off_frontier=r.get(e, (*ek, "off_frontier"), bool, d.off_frontier),
            margin=r.fraction(e, (*ek, "margin"), d.margin),
            min_progress=r.fraction(e, (*ek, "min_progress"), d.min_progress),
        )
        if early.rel_width == 0 and not early.off_frontier:
            r.fail(ek, "rel_width is 0 and off_frontier false: no run could ever stop early")
    else:
        early = EarlyStop() if early is True or early is None else None
    return Adaptive(
        strategy=r.choice(a, (*k, "strategy"), ("active", "isoflop", "random", "grid"), "active"),
        target_flops=(
            r.number(target["flops"], (*k, "target", "flops"), positive=True, at_most=_MAX_FLOPS)
            if "flops" in target
            else None
        ),
        target_runs=_target_runs(r, target, (*k, "target", "runs")),
        quantity=r.choice(
            target, (*k, "target", "quantity"), ("loss_opt", "n_opt", "both"), "both"
        ),
        level=_level(r, target, (*k, "target", "level")),
        target_form=target_form,
        form_error_floor=floor,
        rel_width=r.fraction(stop, (*k, "stop", "rel_width"), 0.05),
        max_rounds=r.get(stop, (*k, "stop", "rounds"), int, 10, positive=True, at_most=1000),
        batch=r.get(a, (*k, "batch"), int, 4, positive=True, at_most=2000),
        repeat_seeds=r.get(a, (*k, "repeat_seeds"), int, 0, at_least=0, at_most=100),
        max_run_flops=(
            None
            if max_run is None
            else r.number(max_run, (*k, "max_run_flops"), positive=True, at_most=_MAX_FLOPS)
        ),
        seed=r.get(a, (*k, "seed"), int, 0, at_least=0, at_most=2**32 - 1),
        early_stop=early,
    )


# Bounds on a target run: far beyond any model or corpus trained to date, so that a typo
# (1e110) fails here instead of producing a meaningless extrapolation.
_MAX_TARGET_PARAMS = 1e15
_MAX_TARGET_TOKENS = 1e18


def _target_runs(r: Reader, target: dict, key: tuple) -> tuple[tuple[float, float], ...]:
    """`target.runs`: a non-empty list of {N: params, D: tokens} to predict."""
    if "runs" not in target:
        return ()
    raw = r.get(target, key, list)
    if not raw:
        r.fail(key, "expected at least one run, like [{N: 7e10, D: 1.4e12}]")
    runs = []
    for i, item in enumerate(raw):
        m = r.mapping(item, (*key, i))
        r.only(m, (*key, i), {"N", "D"})
        n = r.number(m.get("N"), (*key, i, "N"), positive=True, at_most=_MAX_TARGET_PARAMS)
        d = r.number(m.get("D"), (*key, i, "D"), positive=True, at_most=_MAX_TARGET_TOKENS)
        runs.append((n, d))
    return tuple(runs)


def _level(r: Reader, m: dict, key: tuple) -> float:
    level = r.fraction(m, key, 0.9, open_low=True)
    if level >= 1:
        r.fail(key, "expected a confidence level below 1, like 0.9")
    return level


def _seed_grid(r: Reader, top: dict) -> SeedGrid:
    k = ("seed_grid",)
    s = r.section(
        top,
        "seed_grid",
        {
            "min_flops",
            "max_flops",
            "levels",
            "sizes_per_level",
            "size_spread",
            "tokens_per_param",
            "shape_rule",
            "prior_fit",
        },
        required=True,
    )
    min_flops = r.number(s.get("min_flops"), (*k, "min_flops"), positive=True, at_most=_MAX_FLOPS)
    max_flops = None
    if s.get("max_flops") is not None:
        max_flops = r.number(s["max_flops"], (*k, "max_flops"), positive=True, at_most=_MAX_FLOPS)
        if max_flops < min_flops:
            r.fail(
                (*k, "max_flops"),
                f"expected at least min_flops ({min_flops:.3g}), got {max_flops:.3g}",
            )
    return SeedGrid(
        min_flops=min_flops,
        max_flops=max_flops,
        levels=r.get(s, (*k, "levels"), int, 4, positive=True, at_most=200),
        sizes_per_level=r.get(s, (*k, "sizes_per_level"), int, 5, positive=True, at_most=200),
        size_spread=r.number(
            s.get("size_spread", 8.0), (*k, "size_spread"), at_least=1, at_most=1e4
        ),
        tokens_per_param=r.number(
            s.get("tokens_per_param", 20.0), (*k, "tokens_per_param"), at_least=0.1, at_most=1e6
        ),
        shape_rule=r.choice(s, (*k, "shape_rule"), ("default", "tiny"), "default"),
        prior_fit=_prior_fit(r, s, r.path),
    )


def _prior_fit(r: Reader, s: dict, plan_path: str) -> dict[str, float] | None:
    """The parameters of the Chinchilla fit named by `seed_grid.prior_fit` (a fit JSON as
    `orch fit --json` or an experiment's fits/ writes; relative to the plan's directory)."""
    key = ("seed_grid", "prior_fit")
    path = r.get(s, key, str, None)
    if path is None:
        return None
    full = Path(plan_path).parent / path
    try:
        record = FitRecord.load(full)
    except (OSError, ValueError, KeyError, TypeError) as err:
        r.fail(key, f"cannot read the fit {str(full)!r}: {err}")
    if record.form != "chinchilla":
        r.fail(key, f"expected a chinchilla fit, got a {record.form!r} fit")
    return dict(record.params)
