"""Click options built from the declarations of :mod:`prober.settings`.

:func:`setting_options` turns a tuple of :class:`~prober.settings.Setting` into click
options: the flag, its ``PROBER_*`` variable, its metavar, its default, and ``--help``
text that shows the default with its unit, the valid range and the variable, all read
from the declaration. Numbers are parsed and range-checked by the declaration
(:meth:`~prober.settings.Setting.parse`), so the command line, the variables and the
settings values agree on what is valid and say it in the same words. Each parameter
is named after the setting's field, so a command hands its parameters on to a
settings value unchanged.

Variables are read from ``ctx.meta[ENV_KEY]`` when a caller put a mapping there (pure
parsing, as :func:`prober.agent.settings.agent_settings_from` does), else from
``os.environ``. An empty variable counts as unset. Precedence: command line, then
variable, then default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click

from prober.errors import SettingError
from prober.settings import Setting

#: ``ctx.meta`` key of the variables to read instead of ``os.environ``.
ENV_KEY = "prober.env"

F = TypeVar("F", bound=Callable[..., Any])


class SettingOption(click.Option):
    """A click option whose help extras come from its setting, and whose variable may
    come from ``ctx.meta`` rather than ``os.environ``."""

    def __init__(self, *args: Any, setting: Setting[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        env: Mapping[str, str] = ctx.meta.get(ENV_KEY, os.environ)
        if isinstance(self.envvar, str):
            return env.get(self.envvar) or None  # an empty variable counts as unset
        return None

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        extra.pop("default", None)
        shown = self.setting.default_shown()
        if shown and not self.setting.required and self.setting.kind != "flag":
            extra["default"] = shown
        if (valid := self.setting.range_text()) and not self.setting.choices:
            extra["range"] = valid
        return extra


class NumberType(click.ParamType[Any]):
    """A number (or ``none``, where the setting has it) read and checked by its declaration."""

    def __init__(self, setting: Setting[Any]) -> None:
        self.setting = setting
        self.name = "integer" if setting.kind == "int" else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            self.setting.check(value)  # a default
            return value
        try:
            return self.setting.parse(str(value))
        except SettingError as exc:
            raise click.UsageError(str(exc), ctx) from None


def _type(setting: Setting[Any]) -> click.ParamType[Any] | None:
    if setting.numeric:
        return NumberType(setting)
    if setting.kind == "choice":
        return click.Choice(setting.choices)
    if setting.kind == "path":
        return click.Path(dir_okay=False)
    if setting.kind == "dir":
        return click.Path(file_okay=False)
    return None


def setting_option(setting: Setting[Any]) -> Callable[[F], F]:
    """The click option of one setting; its parameter is named after the setting's field."""
    kwargs: dict[str, Any] = {
        "cls": SettingOption,
        "setting": setting,
        "help": setting.described(),
        "show_envvar": setting.env is not None,
        "required": setting.required,
    }
    if setting.env is not None:
        kwargs["envvar"] = setting.env
    if setting.metavar is not None:
        kwargs["metavar"] = setting.metavar
    if (param_type := _type(setting)) is not None:
        kwargs["type"] = param_type
    if setting.kind == "flag":
        kwargs["is_flag"] = True
        kwargs["default"] = setting.default
    elif setting.repeatable:
        kwargs["multiple"] = True
    elif not (setting.standalone or setting.default_text is not None or setting.default is None):
        # A standalone agent's schedule stays unset (None) so that giving it with
        # --collector is an error; a computed default is computed by the command.
        kwargs["default"] = setting.default
    option: Callable[[F], F] = click.option(setting.flag, setting.field, **kwargs)
    return option


def setting_options(settings: Iterable[Setting[Any]]) -> Callable[[F], F]:
    """All the settings' options, shown in ``--help`` in the order given."""
    decorators = [setting_option(s) for s in settings]

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply
