"""Hydra 1.3's config loading (``hydra._internal``: it blocks Hydra 1.4), done once per set of
config groups of a sweep rather than per job as the public ``load_sweep_config`` does; and
Hydra's basic sweeper, which ``sce_grid`` extends.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.defaults_list import create_defaults_list
from hydra.conf import ConfigSourceInfo
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobRuntime, JobStatus
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from sce_sweeps.runtime.adapters import private

__all__ = ["SweepComposer", "sweep_composer"]  # and BasicSweeper(Conf), by __getattr__


def __getattr__(name: str) -> Any:
    """``BasicSweeper`` and its config as Hydra's module holds them now: each plugin scan
    re-executes it, and a class of an earlier execution fails its own ``super()`` check."""
    if name in ("BasicSweeper", "BasicSweeperConf"):
        from hydra._internal.core_plugins import basic_sweeper

        return getattr(basic_sweeper, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sweep_composer(loader: Any, master: DictConfig) -> Callable[[list[str]], DictConfig]:
    """``compose(overrides)``: each job's config as ``load_sweep_config`` makes it."""
    if private("hydra"):
        return SweepComposer(loader, master)
    return lambda overrides: loader.load_sweep_config(master, list(overrides))


class SweepComposer:
    """``load_sweep_config(master_config, overrides)``, merging config files once per groups."""

    def __init__(self, config_loader: ConfigLoaderImpl, master_config: DictConfig) -> None:
        self.loader = config_loader
        self.master = master_config
        self.config_name = master_config.hydra.job.config_name
        hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)
        self.hydra_overrides = [str(x) for x in hydra_overrides]  # as written: not resolved
        self.parser = OverridesParser.create()
        self._parsed: dict[str, Override] = {}  # Hydra's grammar takes ms an override
        self._merged: dict[tuple[str, ...], tuple[bytes, bytes, Any]] = {}
        self.compositions = 0  # how many times the config files were merged (for tests)

    def __call__(self, sweep_overrides: list[str]) -> DictConfig:
        """The config of the job with these overrides, as Hydra's ``load_sweep_config``."""
        parsed = self._parse(self.hydra_overrides + list(sweep_overrides))
        self.loader.validate_sweep_overrides_legal(
            overrides=parsed, run_mode=RunMode.RUN, from_shell=True
        )
        groups = tuple(o.input_line for o in parsed if self._shapes_defaults(o))
        if groups not in self._merged:
            self._merged[groups] = self._merge(list(groups))
        with_runtime, plain, runtime = self._merged[groups]
        values = [o for o in parsed if not self._shapes_defaults(o)]
        keys = [o.key_or_group for o in values]
        touched = any(k == "hydra" or f"{k}.".startswith("hydra.runtime.") for k in keys)
        cfg = pickle.loads(plain if touched else with_runtime)
        self._finish(cfg, parsed, values)
        if touched:  # Hydra sets these last, over the job's overrides
            self._set_runtime(cfg, *runtime)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg

    def _parse(self, lines: list[str]) -> list[Override]:
        """Hydra's parse of each override, each distinct one parsed once."""
        new = [line for line in dict.fromkeys(lines) if line not in self._parsed]
        if new:
            self._parsed.update(zip(new, self.parser.parse_overrides(overrides=new)))
        return [self._parsed[line] for line in lines]

    def _shapes_defaults(self, override: Override) -> bool:
        """Whether an override shapes the defaults list, by Hydra's ``defaults_list.Overrides``."""
        key = override.key_or_group
        if key == "hydra.searchpath" or key.startswith("hydra.searchpath."):
            return True
        if isinstance(override.value(), dict):
            return False
        return self._repo.group_exists(key)

    @functools.cached_property
    def _repo(self) -> Any:
        load = self.loader._parse_overrides_and_create_caching_repo
        return load(self.config_name, self.hydra_overrides)[1]

    def _merge(self, group_overrides: list[str]) -> tuple[bytes, bytes, Any]:
        """The merged config, pickled with and without :meth:`_set_runtime`'s, and that."""
        self.compositions += 1
        self.loader.ensure_main_config_source_available()
        parsed, repo = self.loader._parse_overrides_and_create_caching_repo(
            self.config_name, group_overrides
        )
        defaults = create_defaults_list(
            repo=repo,
            config_name=self.config_name,
            overrides_list=parsed,
            prepend_hydra=True,
            skip_missing=False,
        )
        cfg = self.loader._compose_config_from_defaults_list(defaults=defaults.defaults, repo=repo)
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_readonly(cfg.hydra, False)
        known_choices = dict(defaults.overrides.known_choices)
        sources = [
            ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider)
            for x in repo.get_sources()
        ]
        merged = pickle.dumps(cfg)
        # the same for every job, set once: unless a job's overrides touch hydra.runtime
        self._set_runtime(cfg, known_choices, sources)
        return pickle.dumps(cfg), merged, (known_choices, sources)

    @staticmethod
    def _set_runtime(cfg: DictConfig, known_choices: Any, sources: Any) -> None:
        from hydra import __version__, version

        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices.update(known_choices)
        cfg.hydra.runtime.version = __version__
        cfg.hydra.runtime.version_base = version.getbase()
        cfg.hydra.runtime.config_sources = sources

    def _finish(self, cfg: DictConfig, parsed: list[Override], values: list[Override]) -> None:
        """The value overrides, then the ``hydra`` node (but what :meth:`_set_runtime` sets)."""
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        app_overrides = [o for o in parsed if not o.is_hydra_override()]
        hydra_lines = [o.input_line for o in parsed if o.is_hydra_override()]
        # one assignment each rather than Hydra's append per override: the same list
        cfg.hydra.overrides.hydra = [*cfg.hydra.overrides.hydra, *hydra_lines]
        cfg.hydra.overrides.task = [
            *cfg.hydra.overrides.task,
            *(o.input_line for o in app_overrides),
        ]
        with open_dict(cfg.hydra):
            for key in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[key] = os.environ[key]
        cfg.hydra.runtime.cwd = os.getcwd()
        if "name" not in cfg.hydra.job:
            cfg.hydra.job.name = JobRuntime().get("name")
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides,
            kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys,
        )
        cfg.hydra.job.config_name = self.config_name


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception a failed job raised, read without Hydra's ``return_value``, which writes
    "Error executing job" to stderr and raises it (the public path, which then catches it)."""
    if ret.status != JobStatus.FAILED:
        return None
    if private("hydra"):
        value = ret._return_value
        return value if isinstance(value, BaseException) else None
    try:
        ret.return_value  # noqa: B018 (raises the job's exception)
    except BaseException as e:
        return e
    return None
