"""The typed, validated config of each job: one pydantic model per section of conf/<job>.yaml.

    config = validate_build_config(raw)   # build_samples: the normalized plain dict (same keys as the YAML)
    config = validate_train_config(raw)   # train: a TrainConfig (config.early_stopping.patience, ...)

Every key has a type and, where it has one, a range; relations between keys are checked too
(`item_stats.recent_days <= history.lookback_days`, `split.valid_start < split.test_start`, ...).
Types are strict: an integer setting refuses `abc`, `2.5` and `true`; a number setting takes an
integer (and keeps it as given). Every violation is reported, one `<dotted.key>: <what is wrong>, got
<value>` per line, as one ConfigError, before any work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from feature_spec import parse_date_range, range_text
from pipelines.build_values import DerivedBuildValues
from pipelines.config_types import (
    SEED_MAX,
    Moment,
    Name,
    Names,
    NonNegativeInt,
    Number,
    OovBuckets,
    PositiveInt,
    PositiveNumber,
    SplitMoment,
    VectorColumns,
    to_epoch_seconds,
)
from pipelines.errors import ConfigError, config_problems, shown

__all__ = ["BuildConfig", "TrainConfig", "config_problems", "validate_build_config", "validate_train_config"]


def _relation(key: str, message: str, **context) -> PydanticCustomError:
    """An error about `key` (relative to the model raising it) that involves other keys too."""
    return PydanticCustomError("config_relation", message, {"key": key, **context})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------- build_samples (conf/build_samples.yaml)


class InputSection(Section):
    format: Literal["parquet", "csv"]


def _auto_or_positive(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise PydanticCustomError("auto_or_count", "must be auto or an integer >= 1")


AutoOrCount = Annotated[Any, AfterValidator(_auto_or_positive)]


class SparkSection(Section):
    app_name: Name
    shuffle_partitions: AutoOrCount  # auto: from the impressions read
    impressions_per_partition: PositiveInt
    output_partitions: Optional[PositiveInt]  # null: as many shards as shuffle partitions


def _time_zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if value.upper() == "UTC":
        return value
    try:
        ZoneInfo(value)
    # A zone name is a path into the zone database: a folder of it (America) is an IsADirectoryError, a file
    # that is no zone (zone.tab) or a path that leaves it (../etc) a ValueError.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PydanticCustomError("time_zone", "must be UTC or an IANA time zone such as Europe/Paris") from None
    return value


class DatesSection(Section):
    time_zone: Annotated[Name, AfterValidator(_time_zone)]


class ValidationSection(Section):
    max_reject_fraction: Annotated[Number, Field(ge=0, le=1)]
    ts_min: Moment
    ts_max: Moment

    @model_validator(mode="after")
    def _ordered(self):
        if to_epoch_seconds(self.ts_min) >= to_epoch_seconds(self.ts_max):
            raise _relation(
                "ts_min",
                "must be before validation.ts_max ({ts_max}), got {ts_min}",
                ts_min=repr(self.ts_min),
                ts_max=repr(self.ts_max),
            )
        return self


class LabelsSection(Section):
    attribution_window_minutes: PositiveNumber

    @field_validator("attribution_window_minutes")
    @classmethod
    def _at_least_a_second(cls, value):
        if round(value * 60) < 1:  # the window is used in whole seconds
            raise PydanticCustomError("window", "must be at least one second (1/60 minute)")
        return value


class HistorySection(Section):
    lookback_days: PositiveNumber
    max_len: PositiveInt
    top_genres: PositiveInt
    genre_history_len: PositiveInt


class ItemStatsSection(Section):
    recent_days: PositiveNumber
    smoothing: PositiveNumber  # 0 would divide 0 clicks by 0 impressions


class ItemsSection(Section):
    max_genres: PositiveInt
    numeric_columns: Optional[Names]
    vector_columns: VectorColumns

    @model_validator(mode="after")
    def _vectors_are_not_numeric(self):
        vectors = self.vector_columns or []
        taken = sorted(set(vectors) & set(self.numeric_columns or []))
        if taken:
            raise _relation("vector_columns", "{taken} must not be among items.numeric_columns too", taken=repr(taken))
        return self


Fraction = Annotated[Number, Field(gt=0, lt=1)]


class SplitSection(Section):
    valid_fraction: Fraction
    test_fraction: Fraction
    valid_start: Optional[SplitMoment]
    test_start: Optional[SplitMoment]

    @model_validator(mode="after")
    def _consistent(self):
        if self.valid_fraction + self.test_fraction >= 1:
            raise _relation(
                "valid_fraction",
                "split.valid_fraction + split.test_fraction must be < 1, got {valid} + {test}",
                valid=self.valid_fraction,
                test=self.test_fraction,
            )
        given = [k for k in ("valid_start", "test_start") if getattr(self, k) is not None]
        if len(given) == 1:  # features/split.py cuts by both dates or by the fractions
            (other,) = {"valid_start", "test_start"} - set(given)
            raise _relation(
                other, "must be given with split.{given} (fixed dates come in pairs), got None", given=given[0]
            )
        if given and to_epoch_seconds(self.valid_start) >= to_epoch_seconds(self.test_start):
            raise _relation(
                "valid_start",
                "must be before split.test_start ({test}), got {valid}",
                valid=repr(self.valid_start),
                test=repr(self.test_start),
            )
        return self


class VocabSection(Section):
    min_count: PositiveInt
    oov_buckets: OovBuckets


class NormalizeSection(Section):
    log1p: Optional[Names]  # null: every count feature


class BucketizeSection(Section):
    num_buckets: Annotated[int, Field(ge=2)]
    features: Optional[Names]


class DriftSection(Section):
    histogram_bins: Annotated[int, Field(ge=2)]
    top_values: PositiveInt
    max_oov_share: Annotated[Number, Field(ge=0, le=1)]
    max_js_distance: Annotated[Number, Field(ge=0, le=1)]
    max_linf_distance: Annotated[Number, Field(ge=0, le=1)]
    max_label_rate_change: Annotated[Number, Field(ge=0)]


class TfrecordSection(Section):
    compression: Literal["none", "gzip", "gzip_fast"]  # pipelines/samples/tfrecord.py COMPRESSIONS
    rows_per_record: PositiveInt
    shuffle_seed: int


def _spark_scratch(value):
    """A folder that Spark writes through its own file system and tf.io.gfile reads: local or hdfs://."""
    if "://" in value and not value.startswith(("file:", "hdfs://")):
        raise PydanticCustomError(
            "spark_scratch",
            "must be a local or hdfs:// folder (Spark writes rejects/ and vocab/ there through its own file "
            "system, and the job copies them into SAMPLES)",
        )
    return value


class OutputSection(Section):
    # Where Spark writes the parts of SAMPLES it writes itself (rejects/, vocab/) when it cannot write SAMPLES
    # (s3://); null: SAMPLES itself. See docs/cluster.md, "Object stores".
    spark_scratch: Optional[Annotated[Name, AfterValidator(_spark_scratch)]]
    # Also write SAMPLES/raw_values/test/: the raw values each test sample was made from, what RUN/model's
    # serving_raw signature takes (docs/serving.md). Off by default: it costs a pass over the test split.
    raw_values: bool = False


class BuildConfig(DerivedBuildValues, Section):
    input: InputSection
    output: OutputSection
    spark: SparkSection
    dates: DatesSection
    validation: ValidationSection
    labels: LabelsSection
    history: HistorySection
    item_stats: ItemStatsSection
    items: ItemsSection
    split: SplitSection
    vocab: VocabSection
    normalize: NormalizeSection
    bucketize: BucketizeSection
    drift: DriftSection
    tfrecord: TfrecordSection
    passthrough: Optional[Names]

    @model_validator(mode="after")
    def _across_sections(self):
        for relation in CROSS_SECTION[type(self)]:
            problem = relation(self)
            if problem:
                raise _relation(*problem)
        return self


def _recent_within_lookback(config: BuildConfig) -> tuple[str, str] | None:
    if config.item_stats.recent_days > config.history.lookback_days:
        return (
            "item_stats.recent_days",
            f"must be <= history.lookback_days ({config.history.lookback_days}), got {config.item_stats.recent_days}",
        )
    return None


# Relations between sections: checked once every section is valid, or, when another section is not, on
# the sections they read (so that they are reported with the other problems, not after they are fixed).
CROSS_SECTION = {BuildConfig: [_recent_within_lookback]}


# ---------------------------------------------------------------- train (conf/train.yaml)


class TrainInputSection(Section):
    cycle_length: Optional[PositiveInt]  # null: min(#files, 8)
    deterministic: bool


class EarlyStoppingSection(Section):
    monitor: Literal["val_auc", "val_loss", "auc", "loss"]  # what Keras logs (compile_model: loss, auc)
    mode: Literal["max", "min"]
    patience: NonNegativeInt
    min_delta: Annotated[Number, Field(ge=0)]

    @model_validator(mode="after")
    def _direction(self):
        wanted = "max" if self.monitor.endswith("auc") else "min"
        if self.mode != wanted:
            raise _relation(
                "mode",
                "must be {wanted} for early_stopping.monitor {monitor}, got {mode}",
                wanted=repr(wanted),
                monitor=repr(self.monitor),
                mode=repr(self.mode),
            )
        return self


class CheckpointsSection(Section):
    keep: PositiveInt


class OutputsSection(Section):
    predictions: bool
    embeddings: bool
    embeddings_chunk_rows: PositiveInt


class DistributeSection(Section):
    # pipelines/training/distributed.py STRATEGIES; the cluster comes from TF_CONFIG
    strategy: Literal["none", "mirrored", "multi_worker", "parameter_server"]


class DebugSection(Section):
    crash_after_epoch: Optional[PositiveInt]
    weights_dir: Optional[str]  # every worker writes its trained weights here (worker-<type>-<index>.weights.h5)


def _model_name(value, info: ValidationInfo):
    """The model names come from the caller (`context["model_names"]`, the registry's): the schema imports
    no model, so the build job's side never loads TensorFlow. Without them the name is not checked here."""
    names = (info.context or {}).get("model_names")
    if names is not None and value not in names:
        raise PydanticCustomError("model", "must be one of {names}", {"names": ", ".join(names)})
    return value


def _params(value):
    if value is None:  # `params:` left empty in a YAML file
        return {}
    if not isinstance(value, dict):
        raise PydanticCustomError("params", "must be a mapping of model parameters (models/params.py)")
    return value


def _date_range(value):
    """data.*_dates: null, a day `YYYY-MM-DD` (a string or an unquoted YAML date) or a range `FIRST..LAST`
    (both days included), written back as FIRST..LAST or D."""
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, (str, date)):
        raise PydanticCustomError("date_range", "must be a day YYYY-MM-DD or a range FIRST..LAST (both days included)")
    text = value.isoformat() if isinstance(value, date) else value
    try:
        days = parse_date_range(text)
    except ValueError as exc:
        raise PydanticCustomError(
            "date_range",
            "must be a day YYYY-MM-DD or a range FIRST..LAST (both days included): {reason}",
            {"reason": str(exc)},
        ) from None
    return range_text(days) if ".." not in text else f"{days[0].isoformat()}..{days[-1].isoformat()}"


DateRange = Annotated[Optional[str], BeforeValidator(_date_range)]
DATE_KEYS = {"train": "train_dates", "valid": "valid_dates", "test": "test_dates"}  # in the order of time


class DataSection(Section):
    """Which samples train, validate and test: null for an ordinary SAMPLES (its train/, valid/, test/), or
    days of a date-partitioned SAMPLES (SAMPLES/date=YYYY-MM-DD/, feature_spec/dates.py)."""

    train_dates: DateRange
    valid_dates: DateRange
    test_dates: DateRange

    def dates(self) -> dict[str, str] | None:
        """{split: FIRST..LAST or D}, or None for an ordinary SAMPLES."""
        if self.train_dates is None:
            return None
        return {split: getattr(self, key) for split, key in DATE_KEYS.items()}

    @model_validator(mode="after")
    def _together_and_in_order(self):
        keys = list(DATE_KEYS.values())
        given = [key for key in keys if getattr(self, key) is not None]
        if not given:
            return self
        if len(given) < len(keys):
            missing = [key for key in keys if key not in given]
            raise _relation(
                missing[0],
                "must be given with data.{given}: a date-partitioned SAMPLES needs the train, valid and test days "
                "(data.train_dates, data.valid_dates, data.test_dates), an ordinary one none of them, got None",
                given=" and data.".join(given),
            )
        days = {key: parse_date_range(getattr(self, key)) for key in keys}
        for earlier, later in zip(keys, keys[1:]):
            first, then = days[earlier], days[later]
            if then[0] > first[-1]:
                continue
            shared = sorted(set(first) & set(then))
            if shared:
                raise _relation(
                    later,
                    "overlaps data.{earlier} ({first}) on {shared}: the train, valid and test days must not overlap "
                    "(a model is not validated or tested on days it trained on), got {then}",
                    earlier=earlier,
                    first=getattr(self, earlier),
                    shared=range_text(shared),
                    then=repr(getattr(self, later)),
                )
            raise _relation(
                later,
                "must come after data.{earlier} ({first}): train days first, then valid, then test, got {then}",
                earlier=earlier,
                first=getattr(self, earlier),
                then=repr(getattr(self, later)),
            )
        return self


class TrainConfig(Section):
    model: Annotated[str, WrapValidator(lambda v, h, info: _model_name(h(v), info))]
    run_id: Optional[Name]  # null: the name of the output directory
    epochs: PositiveInt
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    shuffle_buffer: NonNegativeInt
    max_steps_per_epoch: Optional[PositiveInt]
    max_validation_steps: Optional[PositiveInt]
    steps_per_execution: PositiveInt
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)]
    verbose: Annotated[int, Field(ge=0, le=2)]  # 0 silent, 1 progress bar, 2 one line per epoch (conf/train.yaml)
    resume: bool
    init_from: Optional[Name]  # a finished run whose weights and optimizer state a new run starts from
    data: DataSection
    input: TrainInputSection
    early_stopping: EarlyStoppingSection
    checkpoints: CheckpointsSection
    outputs: OutputsSection
    params: Annotated[dict[str, Any], BeforeValidator(_params)]  # keys and values: models.resolve_params
    distribute: DistributeSection
    debug: DebugSection


# ---------------------------------------------------------------- validation


def _cross_section_problems(model: type[Section], config: dict) -> list[str]:
    """The relations between sections that hold valid values, when another part of `config` does not."""
    sections = {}
    for name, field in model.model_fields.items():
        try:
            sections[name] = field.annotation.model_validate(config.get(name))
        except (AttributeError, ValidationError):  # not a section, or an invalid one
            pass
    problems = []
    for relation in CROSS_SECTION.get(model, []):
        try:
            problem = relation(model.model_construct(**sections))
        except AttributeError:  # it reads a section that is not valid
            continue
        if problem:
            problems.append(": ".join(problem))
    return problems


def _validate(model: type[Section], config, context: dict | None = None) -> Section:
    if isinstance(config, model):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: must be a mapping of config keys, got {type(config).__name__}")
    try:
        return model.model_validate(dict(config), context=context)
    except ValidationError as exc:
        problems = config_problems(exc)
        problems += [p for p in _cross_section_problems(model, dict(config)) if p not in problems]
        raise ConfigError("\n".join(problems)) from None


def build_config(config: BuildConfig | Mapping) -> BuildConfig:
    """The build_samples config as a BuildConfig (one is returned as it is); ConfigError (every violation, one
    per line) when anything is wrong."""
    return _validate(BuildConfig, config)


def validate_build_config(config: Mapping) -> dict:
    """The same, as a plain dict with the keys of conf/build_samples.yaml (dates as ISO strings)."""
    return build_config(config).model_dump()


def validate_train_config(config: TrainConfig | Mapping, model_names: Sequence[str] | None = None) -> TrainConfig:
    """The train config as a TrainConfig (a TrainConfig is returned as it is); ConfigError as above.

    `model_names`: the registry's (models.MODEL_NAMES), which the training side passes; `model` must be one."""
    validated = _validate(TrainConfig, config, {"model_names": model_names})
    if model_names is not None and validated.model not in model_names:  # a TrainConfig built without them
        raise ConfigError(f"model: must be one of {', '.join(model_names)}, got {shown(validated.model)}")
    return validated
