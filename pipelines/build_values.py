"""What a build derives from its typed config (pipelines/config_schema.py `BuildConfig`), in the units the
Spark wing computes with: seconds for windows, one dict per setting that has a value per vocabulary."""

from __future__ import annotations

DAY_SECONDS = 86400


class DerivedBuildValues:
    """Mixed into `BuildConfig`: read-only values derived from its sections."""

    @property
    def attribution_window_seconds(self) -> int:
        """How long after an impression a click on it still credits it (whole seconds)."""
        return int(round(float(self.labels.attribution_window_minutes) * 60))

    @property
    def lookback_seconds(self) -> int:
        """How far back the history and the item statistics reach."""
        return int(round(float(self.history.lookback_days) * DAY_SECONDS))

    @property
    def recent_seconds(self) -> int:
        """The window of the recent item counts."""
        return int(round(float(self.item_stats.recent_days) * DAY_SECONDS))

    def oov_buckets_of(self, names) -> dict[str, int]:
        """name -> K for each vocabulary of `names`, from `vocab.oov_buckets` (one number for all, or per name)."""
        setting = self.vocab.oov_buckets
        if isinstance(setting, dict):
            return {name: int(setting.get(name, 1)) for name in names}
        return {name: int(setting) for name in names}

    def value(self, dotted: str):
        """The setting at a dotted key, e.g. `history.lookback_days`."""
        node = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    def as_dict(self) -> dict:
        """The plain dict with the keys of conf/build_samples.yaml (what report.json records)."""
        return self.model_dump()
