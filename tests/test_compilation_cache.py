"""main.py turns JAX's persistent compilation cache on by default, and leaves a user's own setting alone."""

import os

import main

HOME = "/home/someone"
DEFAULT_DIR = os.path.join(HOME, ".cache", "visioncore_jax", "jax_compilation_cache")


def test_the_cache_is_on_under_home_with_a_size_cap_by_default():
    assert main.compilation_cache_settings(None, {}, HOME) == {
        "jax_compilation_cache_dir": DEFAULT_DIR, "jax_compilation_cache_max_size": 2 * 2**30}


def test_a_configured_dir_or_size_is_the_users():
    assert main.compilation_cache_settings("/scratch/cache", {}, HOME) == {}
    assert main.compilation_cache_settings(None, {"JAX_COMPILATION_CACHE_MAX_SIZE": "-1"}, HOME) == {
        "jax_compilation_cache_dir": DEFAULT_DIR}


def test_an_unwritable_default_dir_leaves_the_cache_off_with_one_warning(caplog):
    import jax

    before = jax.config.jax_compilation_cache_dir
    main.enable_compilation_cache(None, {}, "/proc/no-home")  # no directory can be made under /proc
    assert jax.config.jax_compilation_cache_dir == before
    assert "No persistent compilation cache" in caplog.text


def test_the_default_cache_keeps_a_compiled_program_under_home(tmp_path):
    """The settings work with the JAX installed (the size cap needs `filelock`): a compiled program is written
    under the home directory, and read back after the in-memory caches are cleared."""
    import jax
    import jax.numpy as jnp
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size",
             "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    try:
        compilation_cache.reset_cache()
        main.enable_compilation_cache(None, {}, str(tmp_path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        program = jax.jit(lambda x: jnp.tanh(x) * 3.0 + 7.0)
        expected = program(jnp.arange(5.0))
        entries = list((tmp_path / ".cache" / "visioncore_jax" / "jax_compilation_cache").glob("jit__lambda-*-cache"))
        assert len(entries) == 1
        hits = []
        listener = lambda event, **kwargs: hits.append(event)  # noqa: E731
        jax.monitoring.register_event_listener(listener)
        try:
            jax.clear_caches()  # the in-memory executables: the next call reads the file
            assert jnp.array_equal(program(jnp.arange(5.0)), expected)
        finally:
            jax.monitoring.unregister_event_listener(listener)
        assert "/jax/compilation_cache/cache_hits" in hits
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
