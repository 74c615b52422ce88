"""Both sandboxes together: what `crmsync sandbox`, `crmsync sync` (no endpoints
configured) and the tests start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.customcrm.app import API_PREFIX as CUSTOMCRM_PREFIX
from sandbox.customcrm.app import CustomcrmSandbox
from sandbox.demo import DemoSummary, generate
from sandbox.keap.app import API_PREFIX as KEAP_PREFIX
from sandbox.keap.app import KeapSandbox
from sandbox.runtime import ServerThread

DEMO_SIZE = 25


@dataclass
class Sandboxes:
    data_dir: Path
    keap_port: int = 0
    customcrm_port: int = 0
    keap: KeapSandbox = field(init=False)
    customcrm: CustomcrmSandbox = field(init=False)
    servers: list[ServerThread] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.keap = KeapSandbox(self.data_dir)
        self.customcrm = CustomcrmSandbox(self.data_dir)

    @property
    def is_empty(self) -> bool:
        return self.keap.store.count("contacts") == 0 and self.customcrm.store.counts()["customers"] == {
            "live": 0,
            "deleted": 0,
        }

    def seed_demo(self, size: int = DEMO_SIZE, seed: int = 42, customcrm_share: float = 0.08) -> DemoSummary:
        return generate(
            self.keap.store, self.customcrm.store, size=size, seed=seed, customcrm_share=customcrm_share
        )

    def configure(self, keap: dict[str, Any] | None = None, customcrm: dict[str, Any] | None = None) -> None:
        if keap:
            self.keap.gateway.configure(keap)
        if customcrm:
            self.customcrm.gateway.configure(customcrm)

    def start(self) -> Sandboxes:
        self.servers = [
            ServerThread(self.keap.asgi, port=self.keap_port).start(),
            ServerThread(self.customcrm.asgi, port=self.customcrm_port).start(),
        ]
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []
        self.keap.hooks.stop()  # its delivery thread, before the store it reads closes
        self.keap.store.close()
        self.customcrm.store.close()

    @property
    def keap_root(self) -> str:
        return self.servers[0].url

    @property
    def keap_url(self) -> str:
        return self.servers[0].url + KEAP_PREFIX

    @property
    def customcrm_root(self) -> str:
        return self.servers[1].url

    @property
    def customcrm_url(self) -> str:
        return self.servers[1].url + CUSTOMCRM_PREFIX

    def __enter__(self) -> Sandboxes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
