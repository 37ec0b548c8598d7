"""The workflow's plan: a validated config turned into datasets, architectures, jobs, targets and command-line flags.

Everything the Snakefile needs beyond its rules lives here, as plain Python without Snakemake, so it is tested like
any other module. :class:`Plan` checks the whole config when it is built, so a config mistake fails before any job
runs, with one line naming the key and the fix.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
from pathlib import Path

from rfseg.blocks.artifacts import Layout
from rfseg.blocks.bundle import is_bundle
from rfseg.blocks.fourier import lattice_spacings
from rfseg.blocks.models import ArchSpec, build_model, receptive_field, sweep
from rfseg.blocks.simulate.hrtem import KNOBS as HRTEM_KNOBS
from rfseg.errors import UserError

NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # a plain file name: no separators, no leading dot
PRETRAINED = "resources/pretrained"
#: fewer held-out micrographs than this and a comparison of receptive fields is flagged before any job: a bootstrap
#: over so few micrographs has few distinct resamples and understates its spread (by sqrt((n-1)/n) and more)
MIN_TEST_MICROGRAPHS = 8
FIGURES = ["dice_vs_rf", "dice_by_size", "examples", "training_curves", "effective_rf"]
FOURIER_FIGURES = ["false_negatives", "fn_overlap"]
DILATION_FIGURES = ["pooling_vs_dilation", "edges"]


def check_name(name, key: str) -> None:
    """A name rfseg uses as a folder name under ``results``: letters, digits, '_', '-' and inner '.'; not '.', '..'
    or a hidden name, so no output can land outside its folder."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UserError(f"config {key}: the name {name!r} is used in file names: use letters, digits, '_', '-' and "
                        f"'.' (not first) only")


def check_results(results) -> str:
    """The results folder, normalised; UserError for an empty one or the filesystem root."""
    if not isinstance(results, str) or not results.strip():
        raise UserError("config results: the results folder is empty: name a folder, e.g. results: results")
    norm = os.path.normpath(results)
    if norm in ("/", "//") or Path(norm).resolve() == Path("/"):
        raise UserError(f"config results: {results!r} is the filesystem root: name a folder, e.g. results: results")
    return norm


def check_schema(config: dict, schema_path) -> None:
    """Validate ``config`` against the workflow's JSON schema; the first error as one line naming the key, the value
    and what is allowed (Snakemake's own validation, which also fills in defaults, prints the whole schema)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(config))
    if not errors:
        return
    typos = [e for e in errors if e.validator == "additionalProperties"]  # a misspelt key also makes one missing
    error = typos[0] if typos else jsonschema.exceptions.best_match(errors)
    while error.context:  # oneOf/anyOf: the alternative that came closest
        error = jsonschema.exceptions.best_match(error.context)
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    value = repr(error.instance)
    value = value if len(value) <= 60 else value[:57] + "..."
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        raise UserError(f"config {key}: unknown key {unknown[0]!r}" + (f" (allowed: {', '.join(allowed)})"
                                                                         if allowed else "") + ": fix the spelling")
    if error.validator == "required":
        raise UserError(f"config {key}: {error.message}: add it (config.yaml shows an example)")
    message = error.message if len(error.message) <= 120 else error.message[:117] + "..."
    raise UserError(f"config {key}: the value {value} is not allowed ({message})")


def flags(pairs) -> str:
    """'--flag value' for each set value, shell-quoted; True gives a bare flag, None/False leaves it out; lists
    become comma-separated.

    Rules pass these strings (never dicts) as params: the order is fixed here, so reordering keys in the config
    file does not look like a change to Snakemake."""
    out = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out.append(f"{flag} {shlex.quote(','.join(map(str, value)))}")
        else:
            out.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(out)


def code(command: str) -> str:
    """Fingerprint of the code ``rfseg COMMAND`` runs (:func:`rfseg.provenance.command_fingerprint`)."""
    from rfseg.cli import COMMANDS
    from rfseg.provenance import command_fingerprint

    return command_fingerprint(COMMANDS[command])


class Plan:
    """A config (already schema-validated) with every cross-key rule checked.

    Raises
    ------
    UserError
        Naming the config key, for: a dataset name that is not a plain file name, an architecture whose RF does not
        fit the patches, a missing input path or pattern without ``{stem}``, split fractions that do not sum to 1,
        more folds than micrographs, an unknown Fourier material, simulated micrographs smaller than the patches, and a
        predict section that names an unknown dataset or architecture.
    """

    def __init__(self, config: dict):
        self.config = config
        self.layout = Layout(check_results(config.get("results", "results")))
        self.datasets = dict(config.get("datasets") or {})
        self.predict_cfg = config.get("predict")
        self._archs, self._published, self._micrographs = {}, {}, {}
        for ds in self.datasets:
            self._check_dataset(ds)
        if self.predict_cfg:
            self._check_predict()

    # ------------------------------------------------------------------------------------------- checks
    def _check_dataset(self, ds):
        d = self.datasets[ds]
        key = f"datasets.{ds}"
        check_name(ds, "datasets")
        seeds = self.seeds(ds)
        if len(set(seeds)) != len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise UserError(f"config training.seeds (dataset {ds}): seed {twice[0]} is listed twice: each seed would "
                            f"count twice in the mean and std over seeds; list each seed once")
        size = d["patches"]["size"]
        self._archs[ds] = self._arch_names(ds, size)
        if "simulate" in d:
            sim = d["simulate"]
            if sim.get("size", 512) < size:
                raise UserError(f"config {key}.simulate.size ({sim.get('size', 512)} px) is smaller than "
                                f"{key}.patches.size ({size} px): raise the first or lower the second")
        elif "images" in d and "{stem}" not in d["masks"]:
            raise UserError(f"config {key}.masks: the pattern {d['masks']!r} must contain {{stem}}, e.g. "
                            f"masks/{{stem}}.tif")
        split = d.get("split", {})
        fractions = split.get("fractions", [0.7, 0.1, 0.2])
        if abs(sum(fractions) - 1) > 1e-6:
            raise UserError(f"config {key}.split.fractions {fractions} must sum to 1 (train, val, test)")
        self.raw_inputs(ds)  # the files exist
        n = d["simulate"]["n_images"] if "simulate" in d else self._check_user_images(ds)
        self._micrographs[ds] = n
        folds = split.get("folds")
        src = f"{key}.simulate.n_images" if "simulate" in d else key
        if folds and folds > n:
            raise UserError(f"config {src}: {n} micrograph(s), but {folds} folds need at least {folds}: add "
                            f"micrographs or lower split.folds")
        if folds and n - math.ceil(n / folds) < 2:
            raise UserError(f"config {src}: {n} micrograph(s) in {folds} folds (split.folds) leave fewer than two "
                            f"beside a test fold, one to validate and one to train on: add micrographs or use "
                            f"more folds")
        if not folds and n < 3:
            raise UserError(f"config {src}: {n} micrograph(s), but a split by micrograph into train, val and test "
                            f"needs at least 3: add micrographs")
        if "fourier" in d:
            f = d["fourier"]
            if not f.get("radii_px"):
                try:
                    lattice_spacings(f.get("material", "Au"), f.get("spacings_nm"))
                except UserError as e:
                    raise UserError(f"config {key}.{e}") from None
        self.raw_inputs(ds)
        self._published[ds] = self._resolve_published(ds)

    def _resolve_published(self, ds) -> list[tuple[str, str, str]]:
        """(name, member, bundle folder) of every published network the dataset is scored with: a name of a bundle
        shipped in resources/pretrained, or a folder holding bundles (one per member) or being one."""
        out = []
        for entry in self.datasets[ds].get("published", []):
            folder = Path(entry) if "/" in entry else Path(PRETRAINED) / entry
            members = [folder] if is_bundle(folder) else sorted(p for p in folder.glob("*") if is_bundle(p))
            if not members:
                raise UserError(f"config datasets.{ds}.published: {entry!r} is neither a shipped bundle (rfseg "
                                f"models lists them) nor a folder of model bundles")
            name = folder.resolve().name
            for part in [name, *(m.name for m in members)]:
                check_name(part, f"datasets.{ds}.published ({entry!r})")
            out += [(name, m.name, str(m)) for m in members]
        return out

    def _arch_names(self, ds, size) -> list[str]:
        names = []
        for i, entry in enumerate(self.datasets[ds]["architectures"]):
            key = f"config datasets.{ds}.architectures[{i}]"
            try:
                if isinstance(entry, str):
                    specs = [ArchSpec.from_name(entry)]
                elif "sweep" in entry:
                    s = entry["sweep"]
                    blocks = s["blocks"] if isinstance(s["blocks"], list) else [s["blocks"]]
                    specs = [a for n in blocks for a in sweep(n, s.get("max_rf_px", size), s.get("mode", "max"),
                                                              tuple(s.get("dilations", ())))]
                else:
                    specs = [ArchSpec(entry["blocks"], tuple(entry["pools"]), tuple(entry.get("dilations", ())),
                                      entry.get("mode", "max"))]
            except UserError as e:
                raise UserError(f"{key}: {e}") from None
            for spec in specs:
                rf = receptive_field(build_model(spec))
                if rf > size or size % spec.downsampling:
                    raise UserError(
                        f"config datasets.{ds}.architectures: {spec.name} has a receptive field of {rf} px and "
                        f"needs patches that are a multiple of {spec.downsampling} px, but datasets.{ds}.patches.size "
                        f"is {size}: remove it or enlarge the patches")
                if spec.name in names:
                    raise UserError(f"config datasets.{ds}.architectures: {spec.name} is listed twice (entry {i}): its "
                                    f"runs would count twice; list each architecture once")
                names.append(spec.name)
        return names

    def _check_user_images(self, ds) -> int:
        """Check a dataset's own micrographs from their headers (no pixels read): each mask has its image's shape,
        each image has a pixel size where the dataset needs one, and every image holds a patch after resampling.
        Returns the number of micrograph groups (a manifest's ``group``, else images)."""
        import pandas as pd

        from rfseg.blocks import io

        d, key = self.datasets[ds], f"config datasets.{ds}"
        if "manifest" in d:
            try:
                table = io.read_manifest(d["manifest"])
            except UserError as e:
                raise UserError(f"{key}.manifest: {e}") from None
        else:
            table = pd.DataFrame({"image": sorted(glob.glob(d["images"]))})
            table["mask"] = [d["masks"].format(stem=Path(p).stem) for p in table["image"]]
        size, target = d["patches"]["size"], d.get("preprocess", {}).get("target_pixel_size_nm")
        for rec in table.to_dict("records"):
            try:
                shape, px = io.read_header(rec["image"])
                mask_shape, _ = io.read_header(rec["mask"])
            except UserError as e:
                raise UserError(f"{key}: {e}") from None
            if len(shape) != 2:
                raise UserError(f"{key}: {rec['image']} holds an array of shape {shape}, not a 2-D micrograph: "
                                f"export a single frame")
            if tuple(mask_shape) != tuple(shape):
                raise UserError(f"{key}: the mask {rec['mask']} is {mask_shape[0]} x {mask_shape[1]} px but its image "
                                f"{rec['image']} is {shape[0]} x {shape[1]} px: they must have the same shape")
            own = rec.get("pixel_size_nm")
            given = d.get("pixel_size_nm") if io.is_missing(own) else own
            if given is not None:
                px = (float(given), float(given))
            if px is None and not d.get("uncalibrated"):
                raise UserError(f"{key}: {rec['image']} has no pixel size: set {key[7:]}.pixel_size_nm (nm/px), a "
                                f"pixel_size_nm column in the manifest, or uncalibrated: true to work in px")
            if px is not None and not d.get("uncalibrated"):
                for v in px:
                    io.check_pixel_size(v, f"{key}: {rec['image']}")
            scale = [p / target for p in px] if (target and px is not None) else [1.0, 1.0]
            side = min(round(n * f) for n, f in zip(shape, scale))
            if side < size:
                raise UserError(f"{key}.patches.size: {rec['image']} is {side} px on its short side"
                                f"{' after resampling' if target else ''}, smaller than the {size} px patches: lower "
                                f"patches.size")
        groups = table["group"] if "group" in table else table["image"]
        return int(pd.Series(groups).nunique())

    def _check_predict(self):
        p = self.predict_cfg
        check_name(p["name"], "predict.name")
        ds, arch = p["dataset"], p.get("arch", "best")
        if ds not in self.datasets:
            raise UserError(f"config predict.dataset: {ds!r} is not one of the datasets ({', '.join(self.datasets)})")
        if arch != "best" and arch not in self._archs[ds]:
            raise UserError(f"config predict.arch: {arch} is not trained for dataset {ds}: use 'best' or one of "
                            f"{', '.join(self._archs[ds])}")
        self.predict_inputs()

    # -------------------------------------------------------------------------------------- datasets, jobs
    def architectures(self, ds) -> list[str]:
        """Canonical names of a dataset's architectures, in config order, each once."""
        return self._archs[ds]

    def training(self, ds) -> dict:
        """Global training settings, overridden key by key by the dataset's own ``training`` section."""
        return {**self.config["training"], **self.datasets[ds].get("training", {})}

    def seeds(self, ds) -> list[int]:
        return self.training(ds)["seeds"]

    def raw_inputs(self, ds) -> list[str]:
        """Files a dataset's preprocessing reads: the simulation folder, or the user's images, masks, manifest."""
        d = self.datasets[ds]
        if "simulate" in d:
            return [self.layout.raw(ds)]
        if "manifest" in d:
            if not Path(d["manifest"]).is_file():
                raise UserError(f"config datasets.{ds}.manifest: {d['manifest']} does not exist: fix the path")
            return [d["manifest"]]
        images = sorted(glob.glob(d["images"]))
        if not images:
            raise UserError(f"config datasets.{ds}.images: the pattern {d['images']!r} matches no file: fix the path")
        masks = [d["masks"].format(stem=Path(p).stem) for p in images]
        missing = [m for m in masks if not Path(m).is_file()]
        if missing:
            raise UserError(f"config datasets.{ds}.masks: {missing[0]} does not exist: fix the pattern")
        return images + masks

    def input_checksum(self, ds) -> str:
        """With the dataset's ``input_checksums: true``, the SHA-256 of the contents of every file its
        preprocessing reads (a param of the preprocess rule, so a micrograph whose content changes while its mtime
        does not, after ``cp -p`` or ``rsync -a``, still reruns the dataset); empty otherwise. Reads every input in
        full on every Snakemake start."""
        if not self.datasets[ds].get("input_checksums"):
            return ""
        import hashlib

        from rfseg.blocks.io import sha256

        files = self.raw_inputs(ds) if "simulate" not in self.datasets[ds] else []
        if "manifest" in self.datasets[ds]:
            from rfseg.blocks import io

            table = io.read_manifest(self.datasets[ds]["manifest"])
            files += list(table["image"]) + list(table["mask"])
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f}:{sha256(f)}\n".encode())
        return h.hexdigest()

    # ------------------------------------------------------------------------------- folds of cross-validation
    def folds(self, ds) -> list[int | None]:
        """The folds a dataset is split into: ``[0, ..., K-1]`` with ``split: {folds: K}``, else ``[None]``."""
        k = self.datasets[ds].get("split", {}).get("folds")
        return list(range(k)) if k else [None]

    def parts(self, ds) -> list[str]:
        """The units a dataset is trained and tested in: the dataset itself, or ``<ds>/fold<k>`` for each fold of
        cross-validation. Patches, models, evaluations and Fourier baselines live under ``results/<part>/``."""
        return [ds if k is None else f"{ds}/fold{k}" for k in self.folds(ds)]

    def all_parts(self) -> list[str]:
        return [p for ds in self.datasets for p in self.parts(ds)]

    @staticmethod
    def dataset_of(part: str) -> str:
        return part.split("/")[0]

    @staticmethod
    def fold_of(part: str) -> int | None:
        return int(part.split("/fold")[1]) if "/fold" in part else None

    def first_part(self, ds) -> str:
        """The part the per-dataset figures and tables that show one split use (fold 0 under cross-validation)."""
        return self.parts(ds)[0]

    def held_out_micrographs(self, ds) -> int:
        """How many test micrographs a comparison on ``ds`` pools: all of them under cross-validation, else those
        of the test split, estimated from the fractions as if every micrograph gave as many patches."""
        from rfseg.blocks.patches import split_groups

        n = self._micrographs[ds]
        if self.datasets[ds].get("split", {}).get("folds"):
            return n
        fractions = self.datasets[ds].get("split", {}).get("fractions", [0.7, 0.1, 0.2])
        return list(split_groups([str(i) for i in range(n)], [1] * n, fractions).values()).count("test")

    def warnings(self) -> list[str]:
        """One line per dataset whose comparisons cannot be resolved: fewer held-out micrographs than
        :data:`MIN_TEST_MICROGRAPHS`."""
        out = []
        for ds in self.datasets:
            n = self.held_out_micrographs(ds)
            if n < MIN_TEST_MICROGRAPHS:
                cv = self.datasets[ds].get("split", {}).get("folds")
                fix = ("add micrographs" if cv else
                       f"cross-validate (split: {{folds: {min(5, self._micrographs[ds])}}}) so every micrograph is "
                       f"tested once, or add micrographs")
                out.append(f"warning: dataset {ds} tests on {n} micrograph(s), fewer than the "
                           f"{MIN_TEST_MICROGRAPHS} a comparison of receptive fields needs to resolve anything "
                           f"(its intervals rest on resampling the test micrographs): {fix}")
        return out

    def flagged_lines(self) -> list[str]:
        """After a run: one line per architecture whose runs the summary flags (no particle or every pixel predicted,
        or a training loss that never fell), for the workflow's closing message."""
        import pandas as pd

        path = Path(self.layout.summary())
        if not path.is_file():
            return []
        summary = pd.read_csv(path)
        if "status" not in summary:
            return []
        bad = summary[summary["status"].fillna("ok") != "ok"]
        return [f"warning: {r.dataset} {r.arch}: {r.status}; these runs are left out of rfseg recommend (train longer "
                f"or check the masks)" for r in bad.itertuples()]

    def runs(self, ds) -> list[tuple[str, str, int]]:
        """(part, architecture, seed) of every training run of a dataset."""
        return [(p, a, s) for p in self.parts(ds) for a in self.architectures(ds) for s in self.seeds(ds)]

    def model_dirs(self, ds) -> list[str]:
        return [self.layout.model(p, a, s) for p, a, s in self.runs(ds)]

    def eval_dirs(self, ds) -> list[str]:
        return [self.layout.eval(p, a, s) for p, a, s in self.runs(ds)]

    def part_eval_dirs(self, part) -> list[str]:
        """The trained networks' evaluations of one part."""
        return [self.layout.eval(p, a, s) for p, a, s in self.runs(self.dataset_of(part)) if p == part]

    def published(self, ds) -> list[tuple[str, str, str]]:
        """(name, member, bundle folder) of the published networks scored on ``ds``."""
        return self._published[ds]

    def published_bundle(self, ds, name, member) -> str:
        return next(d for n, m, d in self.published(ds) if (n, m) == (name, member))

    def published_eval_dirs(self, ds) -> list[str]:
        return [self.layout.eval_published(p, n, m) for p in self.parts(ds) for n, m, _ in self.published(ds)]

    def _evaluations(self) -> list[str]:
        return [f"{d}/metrics.csv" for ds in self.datasets for d in self.eval_dirs(ds) + self.published_eval_dirs(ds)]

    def metrics_files(self) -> list[str]:
        """Every metrics.csv the aggregation reads: one per trained model and published network, one per Fourier
        baseline."""
        return self._evaluations() + [f"{self.layout.fourier(p)}/metrics.csv" for ds in self.fourier_datasets()
                                      for p in self.parts(ds)]

    def metrics_inputs(self) -> list[str]:
        """What the aggregation depends on: the evaluations' metrics files and the Fourier baselines' folders
        (a rule's directory output)."""
        return self._evaluations() + [self.layout.fourier(p) for ds in self.fourier_datasets() for p in self.parts(ds)]

    def fourier_datasets(self) -> list[str]:
        return [ds for ds in self.datasets if "fourier" in self.datasets[ds]]

    def targets(self) -> list[str]:
        L = self.layout
        t = [L.architectures()]
        if self.datasets:
            t += [L.summary(), L.dataset_table()]
            t += [L.fn_overlap(p) for ds in self.fourier_datasets() for p in self.parts(ds)]
            t += [f for ds in self.datasets for f in self.figure_files(ds)]
            t += [L.fingerprint(ds) for ds in self.datasets]
            t += [L.paired(ds) for ds in self.datasets]
            if self.config.get("series_figure"):
                t.append(L.series_figure())
        if self.predict_cfg:
            t.append(L.predict_out(self.predict_cfg["name"]))
        return t

    # -------------------------------------------------------------------------------------------- figures
    @staticmethod
    def _plain(name) -> bool:
        spec = ArchSpec.from_name(name)
        return spec.mode == "max" and set(spec.dilations) == {1}

    @staticmethod
    def _rf(name) -> int:
        return receptive_field(build_model(ArchSpec.from_name(name)))

    def example_archs(self, ds) -> list[str]:
        """The smallest, a middle and the largest plain (max-pool, undilated) RF, for the example figures."""
        plain = sorted((a for a in self.architectures(ds) if self._plain(a)), key=self._rf)
        return list(dict.fromkeys([plain[0], plain[len(plain) // 2], plain[-1]])) if plain else []

    def example_evals(self, ds) -> list[str]:
        return [self.layout.eval(self.first_part(ds), a, self.seeds(ds)[0]) for a in self.example_archs(ds)]

    def first_models(self, ds, all_seeds: bool = False) -> list[str]:
        """Every architecture's model of the first seed (or of every seed) in the first part: the training-curve
        and ERF figures show one split."""
        seeds = self.seeds(ds) if all_seeds else self.seeds(ds)[:1]
        return [self.layout.model(self.first_part(ds), a, s) for a in self.architectures(ds) for s in seeds]

    def edge_pair(self, ds) -> list[str] | None:
        """(pooled, dilated) architectures of similar RF for the edge figure; None without a dilated one."""
        archs = self.architectures(ds)
        dilated = [a for a in archs if set(ArchSpec.from_name(a).dilations) != {1}]
        pooled = [a for a in archs if self._plain(a)]
        if not dilated or not pooled:
            return None
        d = max(dilated, key=self._rf)
        return [min(pooled, key=lambda a: abs(self._rf(a) - self._rf(d))), d]

    def figure_names(self, ds) -> list[str]:
        names = list(FIGURES)
        if "fourier" in self.datasets[ds]:
            names += FOURIER_FIGURES
        if self.edge_pair(ds):
            names += DILATION_FIGURES
        return names

    def figure_files(self, ds) -> list[str]:
        return [self.layout.figure(ds, f) for f in self.figure_names(ds)]

    # ---------------------------------------------------------------------------------------------- flags
    @staticmethod
    def simulate_flags(sim: dict) -> str:
        return flags([
            ("--n-images", sim["n_images"]), ("--seed", sim["seed"]), ("--size", sim.get("size", 512)),
            ("--pixel-size", sim.get("pixel_size_nm")), ("--diameter-nm", sim.get("diameter_nm")),
            ("--dose", sim.get("dose_e_per_A2")), ("--carbon-thickness-nm", sim.get("carbon_thickness_nm")),
            ("--defocus-offset-nm", sim.get("defocus_offset_nm")),
            # a knob set to false is passed as --no-<knob>, so it holds whatever the knob's default is
            *((("--no-" if sim.get(key) is False else "--") + key.replace("_", "-"),
               True if sim.get(key) is False else sim.get(key)) for key in HRTEM_KNOBS),
        ])

    def preprocess_flags(self, ds) -> str:
        d = self.datasets[ds]
        p = d.get("preprocess", {})
        return flags([
            ("--pixel-size", d.get("pixel_size_nm")), ("--xray-threshold", p.get("xray_threshold")),
            ("--xray-passes", p.get("xray_passes", 2)), ("--flat-field", p.get("flat_field")),
            ("--flat-field-sigma-nm", p.get("flat_field_sigma_nm")),
            ("--target-pixel-size", p.get("target_pixel_size_nm")), ("--uncalibrated", d.get("uncalibrated", False)),
        ])

    def preprocess_source(self, ds, raw_dir=None) -> str:
        d = self.datasets[ds]
        if "simulate" in d:
            return f"--manifest {shlex.quote(str(Path(raw_dir) / 'manifest.csv'))}"
        if "manifest" in d:
            return f"--manifest {shlex.quote(d['manifest'])}"
        return f"--images {shlex.quote(d['images'])} --masks {shlex.quote(d['masks'])}"

    def split_flags(self, part) -> str:
        s = self.datasets[self.dataset_of(part)].get("split", {})
        if s.get("folds"):
            return flags([("--folds", s["folds"]), ("--fold", self.fold_of(part))])
        return flags([("--fractions", s.get("fractions", [0.7, 0.1, 0.2]))])

    def train_flags(self, ds) -> str:
        t = self.training(ds)
        return flags([
            ("--epochs", t["epochs"]), ("--batch-size", t["batch_size"]), ("--lr", t["lr"]),
            ("--augment", t["augment"]), ("--precision", t["precision"]),
            ("--no-channels-last", not t["channels_last"]), ("--device", self.config["compute"]["device"]),
            ("--early-stopping", t.get("early_stopping_patience")), ("--select", t["select"]),
            ("--head-bias", t.get("head_bias")), ("--head-bias-lr-scale", t.get("head_bias_lr_scale")),
            ("--head-init", t.get("head_init")), ("--lr-schedule", t.get("lr_schedule")),
            ("--ema-halflife", t.get("ema_halflife_epochs")),
        ])

    def evaluate_flags(self) -> str:
        return flags([("--tta", self.config["evaluation"]["tta"]), ("--device", self.config["compute"]["device"])])

    def published_flat_field_flag(self) -> str:
        """``--published-flat-field none`` where the config judges micrographs as windows, else nothing, so that
        configs without the key keep their rules' parameters (and their results) unchanged."""
        flat = self.config["evaluation"].get("published_flat_field", "bundle")
        return flags([("--published-flat-field", None if flat == "bundle" else flat)])

    def evaluate_published_flags(self) -> str:
        """evaluate's flags for a published network."""
        return " ".join(filter(None, [self.evaluate_flags(), self.published_flat_field_flag()]))

    def fourier_flags(self, ds) -> str:
        f = self.datasets[ds]["fourier"]
        return flags([
            ("--material", f.get("material")), ("--spacings-nm", f.get("spacings_nm")),
            ("--radii-px", f.get("radii_px")), ("--rel-tol", f.get("rel_tol")), ("--sigma-nm", f.get("sigma_nm")),
            ("--window", f.get("window", False)),
        ])

    def fingerprint_material(self, ds) -> str:
        return self.datasets[ds].get("fourier", {}).get("material", "Au")

    # -------------------------------------------------------------------------------------------- predict
    def predict_model_dirs(self) -> list[str]:
        ds, arch = self.predict_cfg["dataset"], self.predict_cfg.get("arch", "best")
        return [self.layout.model(p, a, s) for p, a, s in self.runs(ds) if arch in ("best", a)]

    def predict_inputs(self) -> list[str]:
        p = self.predict_cfg
        if "simulate" in p:
            return [self.layout.predict_raw(p["name"])]
        files = sorted(glob.glob(p["images"]))
        if not files:
            raise UserError(f"config predict.images: the pattern {p['images']!r} matches no file: fix the path")
        return files

    def predict_image_args(self, inputs) -> str:
        if "simulate" in self.predict_cfg:
            return shlex.quote(f"{inputs[0]}/images/*.tif")
        return " ".join(shlex.quote(f) for f in inputs)

    def predict_select(self, summary) -> str:
        if self.predict_cfg.get("arch", "best") != "best":
            return ""
        return f"--select-best {shlex.quote(summary)} --dataset {shlex.quote(self.predict_cfg['dataset'])}"

    def predict_flags(self) -> str:
        p = self.predict_cfg
        return flags([
            ("--tta", p.get("tta", False)), ("--tile", p.get("tile")), ("--overlap", p.get("overlap")),
            ("--compile", {True: "on", False: "off"}.get(p.get("compile"), p.get("compile"))),
            ("--min-area-px", p.get("min_area_px")),
            ("--min-area-nm2", p.get("min_area_nm2")), ("--keep-all", p.get("keep_all", False)),
            ("--split-touching", p.get("split_touching", False)),
            ("--split-min-distance-nm", p.get("split_min_distance_nm")),
            ("--drop-border", p.get("drop_border", False)), ("--on-pixel-mismatch", p.get("on_pixel_mismatch")),
            ("--pixel-size", p.get("pixel_size_nm")), ("--device", self.config["compute"]["device"]),
        ])
