"""The code sandbox for think-with-image data: model-written Python runs confined by the kernel.

`Sandbox(limits).run(code, {"image.png": png})` -> `SandboxResult`; the snippet reads
/input/image.png and writes into /output (its cwd). See core.py for the dataflow, view.py for
what the snippet can see, seccomp.py for the system-call filter, launcher.py for what runs
inside, and README "The code sandbox" for what is and is not enforced.
"""
from mixture.sandbox.core import DEFAULT_IMPORTS, Sandbox, SandboxLimits, SandboxResult, SandboxUnavailable

__all__ = ["DEFAULT_IMPORTS", "Sandbox", "SandboxLimits", "SandboxResult", "SandboxUnavailable"]
