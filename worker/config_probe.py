"""``smsq_config``: a worker tells `smsq health worker` which accounts file it runs on.

A remote-control command (answered by the worker's consumer thread, like a
ping). The worker first reads its accounts file again if it changed, so a
difference that remains is one the worker cannot get over by itself: its copy
of the file does not validate there (``refused``), or it is another file. With
``--pool prefork`` the answer is the main process's: its children read the file
again when they meet an account they do not know.
"""

from __future__ import annotations

from celery.worker.control import inspect_command

from .config import refresh, refused

COMMAND = "smsq_config"


@inspect_command(name=COMMAND)
def smsq_config(state, **kwargs) -> dict:
    """Which version of the accounts file this worker runs, and its accounts."""
    conf = refresh()
    version = conf.config_version
    return {
        "path": str(conf.config_path),
        "version": str(version),
        "digest": version.digest if version else "",
        "accounts": sorted(conf.accounts),
        "refused": refused(),
    }
