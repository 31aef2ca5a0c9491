"""Check a study's flags against the engine inside its Docker image, before the first trial.

The image's own ``--help`` is the authority on what it accepts, whatever the tuner's flag table
says about that version: the check runs ``python3 -m sglang.launch_server --help`` (and reads
``sglang.__version__``) in the image once, caches the result by image id under
``~/.cache/sglang-tuner/images/`` (or ``$TUNER_CACHE/images``), and raises
:class:`~tuner.core.errors.UnknownFlagError` naming every flag the image rejects. The returned
:class:`ImageInfo` carries the image digest and engine version for the study to record.

>>> sorted(parse_help('''usage: x [-h]
... options:
...   --tp-size TP_SIZE, --tp TP_SIZE
...                         tensor parallel size
...   --schedule-policy {lpm,fcfs}  how to schedule
... ''').items())
[('schedule-policy', ('lpm', 'fcfs')), ('tp', None), ('tp-size', None)]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tuner.core.errors import ConfigError, LaunchError, UnknownFlagError
from tuner.engines.base import EngineProbe
from tuner.launch.base import ImageInfo
from tuner.launch.docker import DockerLauncher
from tuner.space.targets import DockerTarget

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def inspect_image(
    target: DockerTarget | DockerLauncher,
    probe: EngineProbe,
    *,
    cache_dir: Path | None = None,
    timeout_s: float = 600.0,
) -> ImageInfo:
    """Run the engine's ``--help`` and version query in the image (once per image id, then cached).

    Raises :class:`LaunchError` when the image is missing, the daemon is unreachable, or ``--help``
    fails or lists no flags.
    """
    launcher = target if isinstance(target, DockerLauncher) else DockerLauncher(target)
    meta = launcher.require_image()
    image = launcher.target.image
    image_id = str(meta["Id"])
    repo_digests = tuple(meta.get("RepoDigests") or ())
    path = _cache_path(cache_dir, _cache_key(image_id, probe, launcher.target))
    cached = _read_cache(path)
    if cached is not None:
        help_text, version = cached
    else:
        with ThreadPoolExecutor(2) as pool:  # a real engine's import takes seconds: do both at once
            help_run = pool.submit(launcher.run_command, list(probe.help_argv), timeout_s=timeout_s)
            version_run = pool.submit(launcher.run_command, list(probe.version_argv), timeout_s=timeout_s)
            (help_code, help_text), (version_code, version_out) = help_run.result(), version_run.result()
        if help_code != 0:
            raise LaunchError(
                f"`{shlex.join(probe.help_argv)}` in image {image} exited {help_code}; is it a {probe.engine} "
                f"image? Last output:\n{help_text[-2000:]}"
            )
        version = _last_line(version_out) if version_code == 0 else ""
        if not version:
            log.warning("could not read the %s version of %s: %s", probe.engine, image, version_out[-500:])
            version = "unknown"
    parsed = parse_help(help_text)
    if not parsed:
        raise LaunchError(f"`{shlex.join(probe.help_argv)}` in image {image} listed no --flags; cannot check")
    if cached is None:
        _write_cache(path, image=image, image_id=image_id, help_text=help_text, version=version)
    return ImageInfo(
        image=image,
        image_id=image_id,
        repo_digests=repo_digests,
        engine=probe.engine,
        engine_version=version,
        flags=frozenset(parsed),
        choices={k: v for k, v in parsed.items() if v is not None},
        cached=cached is not None,
    )


def check_image_flags(info: ImageInfo, flags: Iterable[str], *, source: str | None = None) -> None:
    """Raise :class:`UnknownFlagError` naming every flag (with or without dashes) the image rejects."""
    bad = [f.lstrip("-") for f in flags if f.lstrip("-") not in info.flags]
    if bad:
        raise UnknownFlagError(
            bad, engine=info.engine, version=f"{info.engine_version} (image {info.image})", source=source
        )


def check_image_choices(
    info: ImageInfo, values: Mapping[str, Sequence[object]], *, source: str | None = None
) -> None:
    """Raise :class:`ConfigError` when a flag's candidate values include one the image's help does not list.

    Only flags whose help shows a ``{a,b,c}`` choice list are checked; booleans are switches, skipped.
    """
    problems = []
    for name, candidates in values.items():
        allowed = info.choices.get(name.lstrip("-"))
        if allowed is None:
            continue
        bad = [str(v) for v in candidates if not isinstance(v, bool) and str(v) not in allowed]
        if bad:
            problems.append(f"--{name.lstrip('-')} {', '.join(bad)} (it accepts {', '.join(allowed)})")
    if problems:
        raise ConfigError(
            f"image {info.image} ({info.engine} {info.engine_version}) rejects " + "; ".join(problems),
            source=source,
        )


def check_image(
    target: DockerTarget | DockerLauncher,
    flags: Iterable[str],
    probe: EngineProbe,
    *,
    choices: Mapping[str, Sequence[object]] | None = None,
    source: str | None = None,
    cache_dir: Path | None = None,
) -> ImageInfo:
    """:func:`inspect_image`, then :func:`check_image_flags` (and :func:`check_image_choices`)."""
    info = inspect_image(target, probe, cache_dir=cache_dir)
    check_image_flags(info, flags, source=source)
    if choices:
        check_image_choices(info, choices, source=source)
    return info


# An argparse option line: two-space indent (continuation lines of help text sit at ~24), a dash.
_OPTION_LINE = re.compile(r"^ {1,6}(-{1,2}[A-Za-z0-9].*)$")
_FLAG = re.compile(r"^--([A-Za-z0-9][\w.-]*)(?:[ =](\{[^}]*\}))?")


def parse_help(text: str) -> dict[str, tuple[str, ...] | None]:
    """Long flags (without dashes) an argparse ``--help`` lists, each with its ``{choices}`` if shown."""
    out: dict[str, tuple[str, ...] | None] = {}
    for line in text.splitlines():
        m = _OPTION_LINE.match(line)
        if m is None:
            continue
        invocation = re.split(r"\s{2,}", m.group(1).strip())[0]
        for part in invocation.split(", "):
            fm = _FLAG.match(part.strip())
            if fm is None:
                continue
            choices = tuple(fm.group(2)[1:-1].split(",")) if fm.group(2) else None
            out[fm.group(1)] = choices
    return out


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:100] if lines else ""


def _cache_key(image_id: str, probe: EngineProbe, target: DockerTarget) -> str:
    """Image id plus everything else that can change the answer (commands, environment, entrypoint)."""
    material = json.dumps(
        [
            CACHE_FORMAT,
            image_id,
            probe.help_argv,
            probe.version_argv,
            sorted(target.env.items()),
            target.entrypoint,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _cache_path(cache_dir: Path | None, key: str) -> Path:
    root = cache_dir or Path(os.environ.get("TUNER_CACHE") or Path.home() / ".cache" / "sglang-tuner")
    return root / "images" / f"{key}.json"


def _read_cache(path: Path) -> tuple[str, str] | None:
    try:
        data = json.loads(path.read_text())
        return str(data["help"]), str(data["engine_version"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, *, image: str, image_id: str, help_text: str, version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps({"image": image, "image_id": image_id, "engine_version": version, "help": help_text})
    )
    tmp.replace(path)  # atomic: concurrent workers never read half a file
