"""XLA flags go to XLA:CPU jobs only, after the user's own, and never when opted out."""

from vit_jax.runtime import accelerator_plugins, backend_will_be_cpu, configure_runtime

FLAG = "--xla_cpu_example=true"


def test_cpu_flags_are_appended_for_cpu_jobs_only():
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert configure_runtime(env, cpu_flags=[FLAG]) == [FLAG]
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {FLAG}"
    assert configure_runtime(env, cpu_flags=[FLAG]) == []  # safe to call twice
    gpu = {"JAX_PLATFORMS": "cuda,cpu"}
    assert configure_runtime(gpu, cpu_flags=[FLAG]) == [] and "XLA_FLAGS" not in gpu


def test_the_users_flag_and_the_opt_out_win():
    mine = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_example=false"}
    assert configure_runtime(mine, cpu_flags=[FLAG]) == []
    assert mine["XLA_FLAGS"] == "--xla_cpu_example=false"
    off = {"JAX_PLATFORMS": "cpu", "VIT_JAX_CPU_FLAGS": "0"}
    assert configure_runtime(off, cpu_flags=[FLAG]) == [] and "XLA_FLAGS" not in off


def test_backend_guess_without_starting_jax():
    assert backend_will_be_cpu({"JAX_PLATFORMS": "cpu"})
    assert not backend_will_be_cpu({"JAX_PLATFORMS": "tpu"})
    # Unset: CPU exactly when no accelerator plugin is installed (none on this machine).
    assert backend_will_be_cpu({}) == (accelerator_plugins({}) == [])
