"""Demo accounts, made the way an operator and a phone app make them: users and homes with
the ``flask users create`` CLI, then login, arm mode and devices through the REST API."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Mapping, Sequence

from demo.client import ApiClient
from demo.processes import ROOT
from demo.scenario import CAMERAS, OFFLINE_CAMERA, PASSWORD, Home, HomeSpec


def create_users(specs: Sequence[HomeSpec], env: Mapping[str, str]) -> None:
    """One ``flask users create`` per home, run side by side."""
    procs = []
    for spec in specs:
        flask = [sys.executable, "-m", "flask", "--app=webapp"]
        home = [f"--home={spec.home}", f"--tier={spec.tier}", f"--timezone={spec.timezone}"]
        cmd = [*flask, "users", "create", spec.email, f"--password={PASSWORD}", *home]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append((spec, proc))
    for spec, proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"flask users create {spec.email} failed:\n{out}")


def set_up_home(base_url: str, spec: HomeSpec) -> Home:
    """Log in, arm the home, register a camera per location and a phone with a push token."""
    api = ApiClient(base_url)
    try:
        token = api.login(spec.email, PASSWORD)
        (home_row,) = api.call("GET", "/homes")["homes"]
        home = Home(spec, home_row["id"], token)
        api.call("PATCH", f"/homes/{home.home_id}", {"arm_mode": spec.arm_mode})
        for location in (*CAMERAS, OFFLINE_CAMERA):
            device = api.call(
                "POST",
                "/devices",
                {
                    "home_id": home.home_id,
                    "kind": "camera",
                    "platform": "camera",
                    "name": f"{location}_cam",
                },
                expect=(201,),
            )
            home.cameras[location] = device["id"]
        platform = "ios" if home.home_id % 2 else "android"
        phone = api.call(
            "POST",
            "/devices",
            {
                "home_id": home.home_id,
                "kind": "phone",
                "platform": platform,
                "name": f"{spec.email.split('@')[0]}'s phone",
                # APNs device tokens are 64 hex digits; FCM tokens are opaque strings.
                "push_token": (
                    secrets.token_hex(32)
                    if platform == "ios"
                    else f"demo-android-token-{home.home_id}"
                ),
            },
            expect=(201,),
        )
        home.phone_id = phone["id"]
        return home
    finally:
        api.close()
