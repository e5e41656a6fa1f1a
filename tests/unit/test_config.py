"""Model types, folder layouts, and settings from flags and environment variables."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.config import LAYOUTS, MODEL_TYPES, add_settings_arguments, folder_for, settings_from_args
from orchestrator.errors import OrchestratorError

ALL_FLAGS = tuple(config._FLAGS)
ENV_NAMES = [env for env, _, _ in config._FLAGS.values()]

EXPECTED = {
    "default": {name: name for name in MODEL_TYPES},
    "a1111": {
        "checkpoint": "Stable-diffusion",
        "lora": "Lora",
        "vae": "VAE",
        "embedding": "embeddings",
        "upscaler": "ESRGAN",
        "controlnet": "ControlNet",
        "hypernetwork": "hypernetworks",
        "motion_module": "animatediff_models",
        "clip_vision": "clip_vision",
        "text_encoder": "text_encoder",
        "diffusion_model": "Stable-diffusion",
    },
    "comfyui": {
        "checkpoint": "checkpoints",
        "lora": "loras",
        "vae": "vae",
        "embedding": "embeddings",
        "upscaler": "upscale_models",
        "controlnet": "controlnet",
        "hypernetwork": "hypernetworks",
        "motion_module": "animatediff_models",
        "clip_vision": "clip_vision",
        "text_encoder": "text_encoders",
        "diffusion_model": "diffusion_models",
    },
}
# ComfyUI's other model folders, so a workflow's every model has one: the same name in the
# ComfyUI and A1111 trees, the type's name in the default one
for _name, (_, _folder) in config.MORE_MODEL_TYPES.items():
    EXPECTED["a1111"][_name] = EXPECTED["comfyui"][_name] = _folder
CASES = [(layout, kind) for layout in EXPECTED for kind in MODEL_TYPES]


@pytest.mark.parametrize(("layout", "kind"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_folder_for_every_type_in_every_layout(layout: str, kind: str) -> None:
    assert folder_for(kind, layout) == EXPECTED[layout][kind]


def test_every_layout_covers_every_type() -> None:
    assert set(LAYOUTS) == set(EXPECTED)
    for layout, mapping in LAYOUTS.items():
        assert set(mapping) == set(MODEL_TYPES), layout


@pytest.mark.parametrize("kind", ["../x", "auto", None, 5, "", "LORA", "lora ", ["lora"], {"a": 1}])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_unknown_type_is_refused(kind, layout: str) -> None:
    with pytest.raises(OrchestratorError) as caught:
        folder_for(kind, layout)
    assert caught.value.code == "unknown_type"
    assert caught.value.status == 400


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, ALL_FLAGS)
    return parser.parse_args(argv)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    settings = settings_from_args(parse([]))
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.engine == "auto"
    assert settings.layout == "default"
    assert settings.aria2_secret is None
    assert settings.models_dir == tmp_path / "models"
    assert settings.state_dir == tmp_path / "state"
    assert settings.staging_dir == tmp_path / "models" / ".staging"
    assert settings.database_path == tmp_path / "state" / "jobs.sqlite3"


def test_environment_variables_are_the_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("ORCHESTRATOR_HOST", "0.0.0.0")
    clean_env.setenv("ORCHESTRATOR_PORT", "9123")
    clean_env.setenv("ORCHESTRATOR_MODELS_DIR", str(tmp_path / "m"))
    clean_env.setenv("ORCHESTRATOR_STATE_DIR", str(tmp_path / "s"))
    clean_env.setenv("ORCHESTRATOR_ENGINE", "requests")
    clean_env.setenv("ARIA2_RPC_URL", "http://127.0.0.1:6801/jsonrpc")
    clean_env.setenv("ARIA2_SECRET", "s3cret")
    clean_env.setenv("ORCHESTRATOR_LAYOUT", "comfyui")
    clean_env.setenv("ORCHESTRATOR_POLL_INTERVAL", "0.5")
    clean_env.setenv("ORCHESTRATOR_MAX_ACTIVE", "3")
    clean_env.setenv("ORCHESTRATOR_LOG_LEVEL", "debug")
    settings = settings_from_args(parse([]))
    assert settings.host == "0.0.0.0"
    assert settings.port == 9123
    assert settings.models_dir == tmp_path / "m"
    assert settings.state_dir == tmp_path / "s"
    assert settings.engine == "requests"
    assert settings.aria2_rpc_url == "http://127.0.0.1:6801/jsonrpc"
    assert settings.aria2_secret == "s3cret"
    assert settings.layout == "comfyui"
    assert settings.poll_interval == 0.5
    assert settings.max_active == 3
    assert settings.log_level == "debug"


def test_flags_win_over_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ORCHESTRATOR_PORT", "9123")
    clean_env.setenv("ORCHESTRATOR_LAYOUT", "comfyui")
    settings = settings_from_args(parse(["--port", "7000", "--layout", "a1111"]))
    assert settings.port == 7000
    assert settings.layout == "a1111"


def test_an_install_holds_the_models_folder_unless_one_is_named(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Staging beside the install's models makes the install one rename, not a copy."""
    settings = settings_from_args(parse(["--comfyui", str(tmp_path / "ComfyUI")]))
    assert settings.models_dir == tmp_path / "ComfyUI" / "models"
    assert settings.staging_dir == tmp_path / "ComfyUI" / "models" / ".staging"
    settings = settings_from_args(parse(["--a1111", str(tmp_path / "webui")]))
    assert settings.models_dir == tmp_path / "webui" / "models"
    named = settings_from_args(parse(["--comfyui", str(tmp_path / "C"), "--models-dir", str(tmp_path / "m")]))
    assert named.models_dir == tmp_path / "m"


def test_home_is_expanded(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("HOME", str(tmp_path))
    settings = settings_from_args(parse(["--models-dir", "~/models"]))
    assert settings.models_dir == tmp_path / "models"


def test_empty_secret_means_none(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ARIA2_SECRET", "")
    assert settings_from_args(parse([])).aria2_secret is None


def test_numbers_are_clamped(clean_env: pytest.MonkeyPatch) -> None:
    settings = settings_from_args(parse(["--poll-interval", "0", "--max-active", "-4"]))
    assert settings.poll_interval > 0
    assert settings.max_active >= 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--engine", "foo"],
        ["--layout", "invokeai"],
        ["--port", "eighty"],
        ["--poll-interval", "fast"],
        ["--max-active", "1.5"],
        ["--block-private", "maybe"],
    ],
)
def test_bad_values_stop_at_start(clean_env: pytest.MonkeyPatch, argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        settings_from_args(parse(argv))


@pytest.mark.parametrize(
    ("name", "value"),
    [("ORCHESTRATOR_ENGINE", "aria"), ("ORCHESTRATOR_PORT", "x"), ("ORCHESTRATOR_LAYOUT", "")],
)
def test_bad_environment_values_stop_at_start(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SystemExit):
        settings_from_args(parse([]))


def test_a_subset_of_flags_uses_defaults_for_the_rest(clean_env: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, ("models-dir", "state-dir"))
    settings = settings_from_args(parser.parse_args([]))
    assert settings.engine == "auto"
    assert settings.port == 8000


def test_exposed_and_private_target_policy(clean_env: pytest.MonkeyPatch) -> None:
    everywhere = "0.0.0.0"
    local = settings_from_args(parse([]))
    assert local.exposed is False
    assert local.blocks_private_targets is False
    exposed = settings_from_args(parse(["--host", everywhere]))
    assert exposed.exposed is True
    assert exposed.blocks_private_targets is True
    relaxed = settings_from_args(parse(["--host", everywhere, "--block-private", "off"]))
    assert relaxed.blocks_private_targets is False
    assert settings_from_args(parse(["--block-private", "on"])).blocks_private_targets is True


def test_token_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    assert settings_from_args(parse([])).access_token is None
    clean_env.setenv("ORCHESTRATOR_TOKEN", "a-long-enough-token-value")
    assert settings_from_args(parse([])).access_token == "a-long-enough-token-value"
