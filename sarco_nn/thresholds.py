"""Sarcopenia cut-offs: the ONE place where they are defined, and the ONE boundary rule.

A threshold set says which measure it applies to (`sma`, cm², or `smi`, cm²/m²) and, per sex,
the cut-off below which a patient is sarcopenic. A cut-off may depend on BMI through bands.

Boundary rule (every set, every level, every command):
  * Strict `<`: a value exactly equal to its cut-off is NOT sarcopenic; a BMI exactly equal to
    a band's lower bound is IN that band (BMI 25.0 is in "BMI ≥ 25").
  * Exact decimal arithmetic: numbers are taken as the decimals they were entered as (a float
    by its shortest repr: 1.6 m is 8/5 m, not 1.600000000000000088…) and compared as exact
    fractions (`fractions.Fraction`). BMI = weight / height² is computed exactly from the
    entered height and weight, so 64 kg at 1.60 m is BMI 25 exactly (floating point gives
    24.999999999999996 and the wrong Martin band); SMI = SMA / height² likewise (`smi_exact`).
    Cut-offs are the published decimals (52.4 is 262/5).

Built-in sets (values and source):
  paper    — SMA < 144 cm² (male), < 92 cm² (female): the reference study's ROUNDING of
             Derstine 2018's L3 values (kept as the default so results match that study).
  derstine — SMA < 144.3 cm² (male), < 92.2 cm² (female): Derstine et al. 2018 (Sci Rep 8:11369),
             the exact published L3 SMA cut-offs the `paper` set rounds.
  prado    — SMI < 52.4 (male), < 38.5 (female) cm²/m² (Prado et al. 2008, Lancet Oncol).
  martin   — SMI < 43 (male, BMI < 25), < 53 (male, BMI ≥ 25), < 41 (female) cm²/m²
             (Martin et al. 2013, J Clin Oncol).

Myosteatosis sets (metric `muscle_hu`, HU: low skeletal-muscle attenuation), same rule and schema:
  martin_myosteatosis — mean muscle HU < 41 HU at BMI < 25, < 33 HU at BMI ≥ 25, both sexes
             (Martin et al. 2013, J Clin Oncol 31:1539), measured over muscle pixels within the
             −29…150 HU gate those cut-offs assume (`hu_gate`, applied whatever the area convention).

Levels: every built-in set was derived at L3 (`levels`), so it gives a flag only at L3; at another
vertebral level a measurement reports areas only (never L3's cut-offs applied elsewhere). A user
file may declare the level(s) its cut-offs were derived at.

A user file (JSON; YAML too when PyYAML is installed) follows this schema:

    {"name": "my_set",            # optional, defaults to the file name
     "metric": "sma" | "smi" | "muscle_hu",
     "male":   52.4,              # a number, or a list of BMI bands:
     "female": [{"bmi_max": 25, "cutoff": 41}, {"bmi_min": 25, "cutoff": 45}],
     "level":  "L3",              # optional: a level or a list of levels (T12…L5); default L3
     "hu_gate": [-29, 150],       # optional, muscle_hu only: HU gate of the mean (default −29…150)
     "source": "Martin 2013"}     # optional free text ("description" too); any other key is refused

A band applies when bmi_min <= BMI < bmi_max (either bound may be omitted; each a finite number);
bands must not overlap. The first matching band wins. A key the schema does not know (a typo such as
"levels" or "hugate") is refused, not ignored: ignoring it would apply the cut-offs at L3 or
within the default gate silently. A set whose male and female cut-offs are the same (Martin's
myosteatosis set) needs no sex. A cut-off outside `cutoff_bounds` (it would flag every patient or none: SMI 524
for 52.4) is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from numbers import Rational
from pathlib import Path

from sarco_nn.errors import InputError, SarcoError

DEFAULT_THRESHOLD_SET = "paper"

_UNITS = {"sma": "cm²", "smi": "cm²/m²", "muscle_hu": "HU"}

#: Metrics of a sarcopenia (low muscle mass) set and of a myosteatosis (low attenuation) set.
SARCOPENIA_METRICS = ("sma", "smi")
MYOSTEATOSIS_METRICS = ("muscle_hu",)

#: Level every built-in set was derived at (and the default level of a user file).
CUTOFF_LEVEL_DEFAULT = "L3"
#: Levels a user file may name (T12…L5, TotalSegmentator naming); kept equal to constants.LEVELS.
_LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5")
#: Gate a muscle_hu cut-off assumes unless its file says otherwise (constants.MUSCLE_HU_GATE).
_DEFAULT_HU_GATE = (-29.0, 150.0)

#: Every spelling of sex that sarco accepts (clinical.csv, `sarco measure --sex`, predict): one table.
SEX_CODES: dict[str, str] = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}

Number = float | int | Fraction | Decimal


def exact(value: Number | str) -> Fraction:
    """The decimal number `value` stands for, as an exact fraction.

    Why: 1.6 as a float is 1.600000000000000088…; arithmetic on it puts a value that is exactly
    at a cut-off a hair to one side. A float is read by its shortest repr (what the user typed,
    what the CSV held); an int, Fraction or Decimal is taken as is; a string is parsed as decimal.
    """
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, (int, Rational)):
        return Fraction(value)
    if isinstance(value, Decimal):
        return Fraction(value)
    try:
        text = value.strip() if isinstance(value, str) else repr(float(value))
        return Fraction(Decimal(text))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{value!r} is not a finite number") from exc


def bmi(height_m: Number | None, weight_kg: Number | None) -> Fraction | None:
    """Exact BMI (kg/m²) from the entered height and weight; None when either is unknown."""
    if height_m is None or weight_kg is None or _nan(height_m) or _nan(weight_kg):
        return None
    h = exact(height_m)
    if h <= 0:
        return None
    return exact(weight_kg) / (h * h)


def smi_exact(sma_cm2: Number, height_m: Number) -> Fraction:
    """Exact SMI (cm²/m²) = SMA / height², from the decimals of SMA and the entered height."""
    h = exact(height_m)
    return exact(sma_cm2) / (h * h)


@dataclass(frozen=True)
class BmiBand:
    """Cut-off that applies when bmi_min <= BMI < bmi_max (None = unbounded)."""

    cutoff: float
    bmi_min: float | None = None
    bmi_max: float | None = None

    @property
    def needs_bmi(self) -> bool:
        return self.bmi_min is not None or self.bmi_max is not None

    def contains(self, bmi: Number) -> bool:
        """bmi_min <= BMI < bmi_max, compared exactly (see the module's boundary rule)."""
        value = exact(bmi)
        return ((self.bmi_min is None or value >= exact(self.bmi_min))
                and (self.bmi_max is None or value < exact(self.bmi_max)))


@dataclass(frozen=True)
class ThresholdSet:
    """A named set of sex-specific (and optionally BMI-specific) cut-offs on SMA or SMI."""

    name: str
    metric: str  # "sma" | "smi" | "muscle_hu"
    bands: dict[str, tuple[BmiBand, ...]] = field(default_factory=dict)  # "M"/"F" -> bands
    levels: tuple[str, ...] = (CUTOFF_LEVEL_DEFAULT,)  # vertebral level(s) the cut-offs were derived at
    hu_gate: tuple[float, float] | None = None  # muscle_hu only: HU gate the mean is taken within

    @property
    def kind(self) -> str:
        """"sarcopenia" (SMA/SMI cut-offs) or "myosteatosis" (muscle attenuation cut-offs)."""
        return "myosteatosis" if self.metric in MYOSTEATOSIS_METRICS else "sarcopenia"

    def applies_at(self, level: str | None) -> bool:
        """True when the cut-offs were published for `level` (None means the default, L3)."""
        return (level or CUTOFF_LEVEL_DEFAULT).upper() in self.levels

    def is_low(self, sex: str | None, value: Number | None, bmi: Number | None = None) -> bool | None:
        """value < cut-off (exact, strict), for any metric; None when sex/BMI/value leave it undecided."""
        if value is None or _nan(value):
            return None
        cutoff = self.cutoff_for(sex, bmi)
        if cutoff is None:
            return None
        return bool(exact(value) < exact(cutoff))

    @property
    def unit(self) -> str:
        return _UNITS[self.metric]

    @property
    def sex_independent(self) -> bool:
        """True when men and women have the same cut-offs (Martin 2013's myosteatosis set): no sex needed."""
        return set(self.bands) == {"M", "F"} and self.bands["M"] == self.bands["F"]

    def _sex_key(self, sex: str | None) -> str | None:
        """"M"/"F"; for a sex-independent set also when the sex is unknown (its cut-offs are the same)."""
        key = normalise_sex(sex)
        return "M" if key is None and self.sex_independent else key

    def cutoff_for(self, sex: str | None, bmi: float | None = None) -> float | None:
        """Cut-off for this patient; None when sex is unknown (and matters) or a BMI band needs a missing BMI."""
        key = self._sex_key(sex)
        if key is None or key not in self.bands:
            return None
        bands = self.bands[key]
        if len(bands) == 1 and not bands[0].needs_bmi:
            return bands[0].cutoff
        if bmi is None or _nan(bmi):
            return None
        for band in bands:
            if band.contains(bmi):
                return band.cutoff
        return None

    def why_undecidable(self, sex: str | None, sma_cm2: float | None, smi: float | None = None,
                        bmi: float | None = None) -> str | None:
        """Short reason why no flag can be given ("unknown sex", "missing height", …), else None."""
        key = self._sex_key(sex)
        if key is None:
            return "unknown sex"
        if key not in self.bands:
            return f"no {self.name} cut-off for sex {key}"
        if self.cutoff_for(key, bmi) is None:
            return "missing BMI (height/weight)" if bmi is None or _nan(bmi) else f"BMI {float(bmi):.1f} outside every band"
        if self.metric == "muscle_hu":
            return None  # the attenuation itself is checked by the caller (is_low / myosteatosis)
        value = sma_cm2 if self.metric == "sma" else smi
        if value is None or _nan(value):
            return "missing SMA" if self.metric == "sma" else "missing height (SMI)"
        return None

    def is_sarcopenic(self, sex: str | None, sma_cm2: float | None, smi: float | None = None,
                      bmi: Number | None = None, height_m: Number | None = None) -> bool | None:
        """True if the measure is strictly below the cut-off; None when it cannot be decided.

        Compared exactly (module docstring). With `height_m`, an SMI set recomputes SMI exactly as
        SMA / height² instead of trusting the float `smi`, so SMI exactly at the cut-off stays put.
        """
        if self.metric == "muscle_hu":
            raise SarcoError(f"threshold set {self.name!r} is a myosteatosis set (muscle HU), not a sarcopenia set",
                             fix="give it with --myosteatosis; use paper, derstine, prado or martin for --thresholds.")
        if self.why_undecidable(sex, sma_cm2, smi, bmi) is not None:
            return None
        if self.metric == "sma":
            value = exact(sma_cm2)
        elif height_m is not None and not _nan(height_m) and sma_cm2 is not None and not _nan(sma_cm2):
            value = smi_exact(sma_cm2, height_m)
        else:
            value = exact(smi)
        return bool(value < exact(self.cutoff_for(sex, bmi)))

    def describe(self, sex: str | None, bmi: float | None = None) -> str:
        """E.g. "SMA<144 cm² (paper, M)"; says why when no cut-off applies."""
        key = normalise_sex(sex) or ("any sex" if self.sex_independent else "?")
        cutoff = self.cutoff_for(sex, bmi)
        if cutoff is None:
            reason = self.why_undecidable(sex, 0.0, 0.0, bmi) or "no cut-off"
            return f"{self.metric.upper()} cut-off undecidable ({self.name}, {key}: {reason})"
        label = "muscle HU" if self.metric == "muscle_hu" else self.metric.upper()
        return f"{label}<{cutoff:g} {self.unit} ({self.name}, {key})"


def normalise_sex(sex: str | None) -> str | None:
    """"M"/"F" from any spelling in SEX_CODES (M/F, male/female, man/woman; any case); else None."""
    if sex is None or (isinstance(sex, float) and math.isnan(sex)):
        return None
    return SEX_CODES.get(str(sex).strip().lower())


def _simple(name: str, metric: str, male: float, female: float) -> ThresholdSet:
    return ThresholdSet(name, metric, {"M": (BmiBand(male),), "F": (BmiBand(female),)})


#: The built-in sets, by name.
THRESHOLD_SETS: dict[str, ThresholdSet] = {
    "paper": _simple("paper", "sma", 144.0, 92.0),       # the reference study's rounding of Derstine 2018
    "derstine": _simple("derstine", "sma", 144.3, 92.2),  # Derstine et al. 2018, exact published values
    "prado": _simple("prado", "smi", 52.4, 38.5),
    "martin": ThresholdSet(
        "martin",
        "smi",
        {"M": (BmiBand(43.0, bmi_max=25.0), BmiBand(53.0, bmi_min=25.0)), "F": (BmiBand(41.0),)},
    ),
}

_MARTIN_MA = (BmiBand(41.0, bmi_max=25.0), BmiBand(33.0, bmi_min=25.0))
#: Built-in myosteatosis sets (metric muscle_hu), by name; looked up by the same get_threshold_set.
MYOSTEATOSIS_SETS: dict[str, ThresholdSet] = {
    "martin_myosteatosis": ThresholdSet("martin_myosteatosis", "muscle_hu", {"M": _MARTIN_MA, "F": _MARTIN_MA},
                                        hu_gate=_DEFAULT_HU_GATE),
}
DEFAULT_MYOSTEATOSIS_SET = "martin_myosteatosis"


def is_named_set(name_or_path: str | Path) -> bool:
    """True when `get_threshold_set` reads `name_or_path` as a built-in set's name (any letter case),
    False when it reads it as a file path."""
    return str(name_or_path).lower() in THRESHOLD_SETS or str(name_or_path).lower() in MYOSTEATOSIS_SETS


def get_threshold_set(name_or_path: str | Path) -> ThresholdSet:
    """A built-in set by name (`is_named_set`), or a user JSON/YAML file (schema in the module docstring)."""
    text = str(name_or_path)
    if text.lower() in THRESHOLD_SETS:
        return THRESHOLD_SETS[text.lower()]
    if text.lower() in MYOSTEATOSIS_SETS:
        return MYOSTEATOSIS_SETS[text.lower()]
    path = Path(text).expanduser()
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists():
        return load_threshold_file(path)
    raise SarcoError(
        f"unknown threshold set {text!r}",
        fix=f"use one of: {', '.join([*THRESHOLD_SETS, *MYOSTEATOSIS_SETS])}, or a JSON/YAML file path.",
    )


def sarcopenia_set(name_or_path: str | Path) -> ThresholdSet:
    """`get_threshold_set` for a command's --thresholds: a myosteatosis (muscle_hu) set is refused here, once,
    before any image is read. Why: `sarco evaluate` skipped every case as "unreadable or inconsistent files",
    the fix naming a --myosteatosis option it does not have."""
    ts = get_threshold_set(name_or_path)
    if ts.kind != "sarcopenia":
        raise SarcoError(f"threshold set {ts.name!r} is a myosteatosis set (metric muscle_hu), not a sarcopenia set",
                         fix=f"give --thresholds {', '.join(THRESHOLD_SETS)} or a file with \"metric\": \"sma\" or "
                             "\"smi\" (sarco measure takes a myosteatosis set with --myosteatosis).")
    return ts


def load_threshold_file(path: str | Path) -> ThresholdSet:
    """Parse and validate a user threshold file; every problem is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError("threshold file not found", path=path, fix="check the path given to --thresholds.")
    raw_text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise InputError("YAML threshold files need PyYAML", path=path, fix="write the file as JSON.") from None
            data = yaml.safe_load(raw_text)
        else:
            data = json.loads(raw_text)
    except InputError:
        raise
    except Exception as exc:  # json.JSONDecodeError / yaml.YAMLError
        raise InputError(f"cannot parse threshold file ({str(exc).splitlines()[0]})", path=path) from None
    fix = 'expected {"metric": "sma"|"smi"|"muscle_hu", "male": <number or bands>, "female": <number or bands>}.'
    if not isinstance(data, dict):
        raise InputError("threshold file must hold one object", path=path, fix=fix)
    unknown = sorted(str(k) for k in data if k not in _FILE_KEYS)
    if unknown:  # a typo ("levels", "hugate") ignored would apply the cut-offs at L3 / the default gate silently
        raise InputError(f"unknown key(s) {', '.join(map(repr, unknown))} (a typo?)", path=path,
                         fix=f"use only {', '.join(_FILE_KEYS)}.")
    metric = str(data.get("metric", "")).lower()
    if metric not in _UNITS:
        raise InputError(f"metric must be 'sma', 'smi' or 'muscle_hu', got {data.get('metric')!r}", path=path, fix=fix)
    bands: dict[str, tuple[BmiBand, ...]] = {}
    for key, sex in (("male", "M"), ("female", "F")):
        if key not in data:
            raise InputError(f"missing '{key}' cut-off", path=path, fix=fix)
        bands[sex] = _parse_bands(data[key], key, path, fix, any_sign=metric == "muscle_hu")
    name = str(data.get("name") or path.stem)
    levels = _parse_levels(data.get("level", CUTOFF_LEVEL_DEFAULT), path, fix)
    hu_gate = None
    if metric == "muscle_hu":
        hu_gate = _parse_gate(data.get("hu_gate", list(_DEFAULT_HU_GATE)), path)
    elif "hu_gate" in data:
        raise InputError("'hu_gate' applies to metric 'muscle_hu' only", path=path, fix="remove it or use muscle_hu.")
    _check_cutoff_range(metric, bands, hu_gate, path)
    return ThresholdSet(name, metric, bands, levels, hu_gate)


#: Adult heights (m) that turn the plausible SMA into the plausible SMI of `cutoff_bounds`.
_ADULT_HEIGHT_M = (1.2, 2.2)


def cutoff_bounds(metric: str, hu_gate: tuple[float, float] | None = None) -> tuple[float, float]:
    """(low, high): a cut-off outside flags every plausible patient or none (a decimal slip: SMI 524 for 52.4).

    SMA: mask_checks' plausible adult SMA (SMA_FLOOR_CM2..SMA_CEILING_CM2, 30-500 cm²; a measurement outside is a
    review with no flag); SMI: that SMA over adult heights 1.2-2.2 m (6.2-347 cm²/m²); muscle_hu: the set's HU gate
    (the mean is taken within it). Published cut-offs lie far inside (SMA 92-144 cm², SMI 38.5-53, HU 33-41).
    """
    from sarco_nn.mask_checks import SMA_CEILING_CM2, SMA_FLOOR_CM2

    if metric == "muscle_hu":
        return hu_gate or _DEFAULT_HU_GATE
    if metric == "smi":
        return SMA_FLOOR_CM2 / _ADULT_HEIGHT_M[1] ** 2, SMA_CEILING_CM2 / _ADULT_HEIGHT_M[0] ** 2
    return SMA_FLOOR_CM2, SMA_CEILING_CM2


def _check_cutoff_range(metric: str, bands: dict[str, tuple[BmiBand, ...]], hu_gate, path: Path) -> None:
    low, high = cutoff_bounds(metric, hu_gate)
    unit = _UNITS[metric]
    for sex, key in (("M", "male"), ("F", "female")):
        for band in bands[sex]:
            if not low < band.cutoff < high:
                every = "every patient" if band.cutoff >= high else "no patient"
                raise InputError(f"'{key}' cut-off {band.cutoff:g} {unit} lies outside {low:.4g}..{high:.4g} {unit}: "
                                 f"it would flag {every} (a decimal or unit slip?)", path=path,
                                 fix=f"give the published cut-off in {unit} (e.g. prado: SMI 52.4 / 38.5 cm²/m²; "
                                     "martin_myosteatosis: 41 / 33 HU).")


#: Keys a threshold file may hold (the schema in the module docstring); any other is refused.
_FILE_KEYS = ("name", "metric", "male", "female", "level", "hu_gate", "source", "description")


def _parse_levels(value, path: Path, fix: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    levels = tuple(str(v).strip().upper() for v in items)
    bad = [v for v in levels if v not in _LEVELS]
    if not levels or bad:
        raise InputError(f"'level' {value!r} is not one of {', '.join(_LEVELS)}", path=path, fix=fix)
    return levels


def _parse_gate(value, path: Path) -> tuple[float, float]:
    fix = 'write it as "hu_gate": [low, high] in HU, e.g. [-29, 150].'
    if not isinstance(value, list) or len(value) != 2 or any(isinstance(v, bool) for v in value):
        raise InputError(f"'hu_gate' {value!r} must be two numbers", path=path, fix=fix)
    try:
        lo, hi = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise InputError(f"'hu_gate' {value!r} must be two numbers", path=path, fix=fix) from None
    if not lo < hi or math.isinf(lo) or math.isinf(hi):
        raise InputError(f"'hu_gate' {value!r} needs low < high", path=path, fix=fix)
    return lo, hi


def _parse_bands(value, key: str, path: Path, fix: str, any_sign: bool = False) -> tuple[BmiBand, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (BmiBand(_positive(value, key, path, fix, any_sign)),)
    if not isinstance(value, list) or not value:
        raise InputError(f"'{key}' must be a number or a non-empty list of BMI bands", path=path, fix=fix)
    bands = []
    for item in value:
        if not isinstance(item, dict) or "cutoff" not in item or set(item) - {"cutoff", "bmi_min", "bmi_max"}:
            raise InputError(f"'{key}' band {item!r} needs 'cutoff' and optional 'bmi_min'/'bmi_max' only",
                             path=path, fix=fix)
        lo, hi = (_bmi_bound(item.get(b), b, key, path, fix) for b in ("bmi_min", "bmi_max"))
        if lo is not None and hi is not None and not lo < hi:
            raise InputError(f"'{key}' band has bmi_min >= bmi_max", path=path, fix=fix)
        bands.append(BmiBand(_positive(item["cutoff"], key, path, fix, any_sign), lo, hi))
    for i, a in enumerate(bands):  # overlapping bands would make the answer order-dependent
        for b in bands[i + 1:]:
            if _lo(a) < _hi(b) and _lo(b) < _hi(a):
                raise InputError(f"'{key}' BMI bands overlap", path=path, fix=fix)
    return tuple(bands)


def _bmi_bound(value, bound: str, key: str, path: Path, fix: str) -> float | None:
    """A band's bmi_min/bmi_max as a finite float (None when omitted): "abc" was a traceback, NaN and
    Infinity were accepted and failed only when a patient's BMI met them."""
    if value is None:
        return None
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise InputError(f"'{key}' band {bound} {value!r} is not a finite number", path=path,
                         fix="give the BMI bound in kg/m², e.g. 25, or omit it for an open band.")
    return number


def _lo(band: BmiBand) -> float:
    return -math.inf if band.bmi_min is None else band.bmi_min


def _hi(band: BmiBand) -> float:
    return math.inf if band.bmi_max is None else band.bmi_max


def _positive(value, key: str, path: Path, fix: str, allow_negative: bool = False) -> float:
    if isinstance(value, bool):  # float(true) is 1.0: a cut-off of 1 cm² from a slip
        raise InputError(f"'{key}' cut-off {value!r} is not a number", path=path, fix=fix)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"'{key}' cut-off {value!r} is not a number", path=path, fix=fix) from None
    if math.isnan(number) or math.isinf(number):
        raise InputError(f"'{key}' cut-off {value!r} must be a finite number", path=path, fix=fix)
    if allow_negative:
        return number
    if not number > 0:
        raise InputError(f"'{key}' cut-off {value!r} must be a positive number", path=path, fix=fix)
    return number


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


__all__ = [
    "DEFAULT_MYOSTEATOSIS_SET", "DEFAULT_THRESHOLD_SET", "MYOSTEATOSIS_SETS", "THRESHOLD_SETS", "SEX_CODES", "BmiBand", "ThresholdSet", "bmi", "exact",
    "cutoff_bounds", "get_threshold_set", "is_named_set", "load_threshold_file", "normalise_sex", "sarcopenia_set", "smi_exact",
]
