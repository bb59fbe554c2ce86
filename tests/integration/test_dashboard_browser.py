"""The web dashboard in headless Chromium against a running cloud: the embedded broker (amqtt), the
cloud with its API and dashboard served by uvicorn on 127.0.0.1 over a SQLite store, and eight
simulated fridges in two groups. Three rollouts give the pages real data: v1 everywhere (judged
gates), a faulty v2 that fails its drift gate and is rolled back (an alert), and v1 #6 held in its
first wave's observation (live gates). Each page renders what the store holds; an operator pauses
and resumes a rollout from the browser, a read token is refused; the gate values shown are the
API's; 2,000 more devices page and filter in the browser. Screenshots of each page are saved."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.simulate import simulated_agents
from cloud import tokens
from cloud.audit import cli_actor
from cloud.broker import EmbeddedBroker, free_port
from cloud.ingest import ingest
from cloud.operations import Operations
from cloud.plan import Gates, RolloutPlan, Selector, Timeouts
from cloud.queries import DeviceFilter, Paging, Queries
from cloud.rollouts import FINISHED, ROLLED_BACK, SUCCEEDED
from cloud.service import Cloud
from cloud.store import sqlite_url
from cloud.web.render import num
from compiler.bundle import Bundle
from contract import topics
from contract.signing import TrustStore
from contract.state import DeviceState
from examples.fridge.synth import write_dataset
from tests.integration.browser import VIEWPORT, Screens, chromium, sign_in
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
PER_GROUP = 4
GROUPS = ("kitchen-eu", "kitchen-us")
BULK = 2000


@dataclass
class Running:
    cloud: Cloud
    base: str
    operator: str  # tokens
    reader: str
    stop_agents: threading.Event
    threads: list[threading.Thread]
    screens: Screens
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def queries(self) -> Queries:
        return Queries(self.cloud.sessions)

    def api(self, path: str) -> Any:
        answer = httpx.get(self.base + path, headers={"Authorization": f"Bearer {self.reader}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def quiet(self) -> None:
        """Stop the agents and wait until the cloud stored their last message (each says it goes
        offline after its last telemetry, in order): the live gates stop moving."""
        self.stop_agents.set()
        for thread in self.threads:
            thread.join(timeout=30)
        until(lambda: self.queries.online("kitchen-") == 0, "every agent's offline state", 60)


def plan(groups: list[str], waves: str, observe_s: float = 5.0) -> RolloutPlan:
    return RolloutPlan(selector=Selector(groups=groups), waves=waves, probation_s=1.0,  # type: ignore[arg-type]
                       gates=Gates(min_inferences=10, max_input_drift=2.0),  # PSI on 60 photos is noisy
                       timeouts=Timeouts(ack_s=3, wave_s=90, observe_s=observe_s), chunk_size=32 * 1024)


def finished(queries: Queries, rollout: str) -> bool:
    return queries.rollout(rollout).status in FINISHED


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, world: dict[str, object],
            faulty_bundle: Bundle) -> Iterator[Running]:
    root: Path = world["root"]  # type: ignore[assignment]
    work = tmp_path_factory.mktemp("dashboard")
    write_dataset(work / "frames", 60, seed=11)
    public = root / "keys" / "ops.pub"
    with EmbeddedBroker() as broker:
        cloud = Cloud(sqlite_url(work / "cloud.db"), broker.cloud_credentials(reconnect_min_s=1),
                      world["trusted_key"], client_id="cloud-web").start()  # type: ignore[arg-type]
        stop = threading.Event()
        threads: list[threading.Thread] = []
        try:
            port = free_port()
            cloud.serve_api(port)
            base = f"http://127.0.0.1:{port}"
            until(lambda: _answers(base + "/health"), "the API to listen", 30)
            operator = tokens.create(cloud.sessions, "web-operator", "operate", "test")
            reader = tokens.create(cloud.sessions, "web-reader", "read", "test")
            agents = []
            for group in GROUPS:
                agents += simulated_agents(PER_GROUP, broker.cloud_credentials(), work / "devices", [public], [group],
                                           work / "frames", prefix=group, inference_interval_s=0.3,
                                           telemetry_window_s=1,
                                           credentials=lambda d: broker.device_credentials(d, reconnect_min_s=1))
            running = Running(cloud, base, operator, reader, stop, threads, Screens(work / "screens"))
            for count, agent in enumerate(agents, start=1):  # one at a time: amqtt dislikes a stampede
                threads.append(threading.Thread(target=agent.run, kwargs={"stop": stop}, daemon=True))
                threads[-1].start()
                until(lambda n=count: running.queries.online("kitchen-") == n, f"fridge {count} online", 60)
            _rollouts(running, world, faulty_bundle, public)
            yield running
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            cloud.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _rollouts(running: Running, world: dict[str, object], faulty: Bundle, public: Path) -> None:
    queries, sessions = running.queries, running.cloud.sessions
    operator = Operations(sessions, cli_actor())
    trust = TrustStore.from_paths([public])
    v1, v1_6 = (operator.add_bundle(world["bundles"][n].tarball, trust).sha256 for n in (5, 6))  # type: ignore[index]
    v2 = operator.add_bundle(faulty.tarball, trust).sha256
    operator.start_rollout(v1, plan(list(GROUPS), "1,100%"), "web-v1")
    until(lambda: finished(queries, "web-v1"), "v1 everywhere", 240)
    assert queries.rollout("web-v1").status == SUCCEEDED, queries.rollout("web-v1").reason
    operator.start_rollout(v2, plan([GROUPS[1]], "100%"), "web-faulty")
    until(lambda: finished(queries, "web-faulty"), "the faulty v2 rolled back", 240)
    assert queries.rollout("web-faulty").status == ROLLED_BACK, queries.rollout("web-faulty").reason
    operator.start_rollout(v1_6, plan([GROUPS[0]], "2,100%", observe_s=3600), "web-live")

    def judged_live() -> bool:  # wave 1 settled, and enough evidence for the data gates
        waves = queries.gates("web-live").waves
        return bool(waves) and {"error_rate", "prediction_drift"} <= {g.gate for g in waves[-1].gates}

    until(judged_live, "the live wave's evidence", 180)
    with sessions.begin() as session:  # a payload no device would send: stored as a dead letter
        ingest(session, topics.telemetry(f"{GROUPS[0]}-0000"), b'{"schema_version": 1, "device_id": 7}')


def test_each_page_renders_the_fleet_it_reads(running: Running) -> None:
    with chromium() as browser:
        page = sign_in(browser, running.base, running.operator)
        screens = running.screens
        assert page.locator("header .who").inner_text().startswith("web-operator")
        for group in GROUPS:
            row = page.locator(f".facet[data-facet=group] tr:has(a:text-is('{group}'))")
            assert row.locator("td.n").first.inner_text() == str(PER_GROUP)
        assert page.locator("#devices tbody tr").count() >= 2 * PER_GROUP
        screens.shot(page, "01-fleet")

        page.click(f"#devices a:text-is('{GROUPS[0]}-0000')")
        page.wait_for_selector("#telemetry .chart .uplot")
        device = running.queries.device(f"{GROUPS[0]}-0000").device
        assert page.locator("#slots").inner_text().count("fridge v1 #") == 2  # active and known good
        assert f"fridge v1 #{device.active['sequence']}" in page.locator("#slots dd").first.inner_text()  # type: ignore[index]
        assert page.locator("#telemetry .chart canvas").count() == 4
        assert page.locator("#inventory tr").count() >= 1
        assert "SUCCEEDED" in page.locator("#timeline").inner_text()
        screens.shot(page, "02-device")

        page.goto("/ui/rollouts")
        assert page.locator("#rollouts tbody tr").count() == 3
        screens.shot(page, "03-rollouts")
        page.click("#rollouts a:text-is('web-faulty')")
        assert page.locator("#status").inner_text() == ROLLED_BACK
        failed = page.locator(".gates tr.gate[data-gate=prediction_drift]")
        assert "failed" in failed.inner_text()
        assert "prediction_drift" in page.locator(".reason-box").inner_text()
        assert page.locator("#timeline li.tl-alert").count() >= 1
        screens.shot(page, "04-rollout-rolled-back")
        page.goto("/ui/rollouts/web-live")
        assert page.locator(".gates[data-judged=no]").count() == 1
        screens.shot(page, "05-rollout-live")

        page.click("nav >> text=Bundles")
        assert page.locator("#bundles tbody tr").count() == 3
        screens.shot(page, "06-bundles")
        page.click("#bundles tbody tr:first-child a")
        steps = page.locator("#steps tbody tr")
        names = [steps.nth(i).locator("td").nth(1).inner_text() for i in range(steps.count())]
        assert names[0] == "float model" and names[-1] == "compiled bundle" and "quantize.static" in names
        assert "KiB" in steps.last.locator("td").nth(2).inner_text()
        screens.shot(page, "07-bundle")

        page.click("nav >> text=Alerts")
        assert "gate_failed" in page.locator("#alerts").inner_text()
        screens.shot(page, "08-alerts")
        page.click("nav >> text=Dead letters")
        assert f"{GROUPS[0]}-0000" in page.locator("#dead-letters").inner_text()
        screens.shot(page, "09-dead-letters")
        page.click("nav >> text=Audit log")
        assert page.locator("#audit tbody tr").count() >= 6  # three bundles, three rollouts
        screens.shot(page, "10-audit")


def test_an_operator_pauses_and_resumes_a_rollout_a_reader_is_refused(running: Running) -> None:
    with chromium() as browser:
        page = sign_in(browser, running.base, running.operator)
        page.goto("/ui/rollouts/web-live")
        assert page.locator("#status").inner_text() == "RUNNING"
        page.click("details[data-action=pause] summary")
        confirm = page.locator("details[data-action=pause] button[type=submit]")
        assert confirm.is_visible() and "Yes, pause web-live" in confirm.inner_text()
        running.screens.shot(page, "11-pause-confirm", full_page=False)
        confirm.click()
        page.wait_for_selector("#done")
        assert page.locator("#status").inner_text() == "PAUSED"
        assert running.api("/rollouts/web-live")["status"] == "PAUSED"
        running.screens.shot(page, "12-paused")
        page.click("details[data-action=resume] summary")
        page.click("details[data-action=resume] button[type=submit]")
        page.wait_for_selector("#done")
        assert page.locator("#status").inner_text() == "RUNNING" == running.api("/rollouts/web-live")["status"]

        reader = sign_in(browser, running.base, running.reader)
        reader.goto("/ui/rollouts/web-live")
        assert "scope read" in reader.locator("#read-only").inner_text()
        assert reader.locator("details[data-action=pause] button[type=submit]").is_disabled()
        with reader.expect_navigation():  # the form sent anyway (as a hand-made request would be)
            reader.evaluate("document.querySelector('details[data-action=pause] form').submit()")
        assert "needs a token of scope operate" in reader.locator(".problem").inner_text()
        running.screens.shot(reader, "13-refused-read-token")
    assert running.api("/rollouts/web-live")["status"] == "RUNNING"
    audit = [a for a in running.queries.audit(Paging(limit=20)).items if a.action.startswith("rollout.")][:3]
    assert [(a.actor, a.action, a.result.split(":")[0]) for a in audit] == [
        ("token:web-reader", "rollout.pause", "refused"), ("token:web-operator", "rollout.resume", "ok"),
        ("token:web-operator", "rollout.pause", "ok")]


def test_a_hostile_page_cannot_sign_the_operator_in_as_the_attacker(running: Running) -> None:
    """Login CSRF (found by review): a page of another site posts the sign-in form with the
    attacker's token; the operator's browser was signed in as the attacker. Chromium sends the
    hostile page's Origin, and the dashboard refuses it."""
    attack = (f'<form id="f" method="post" action="{running.base}/ui/login"><input name="token" '
              f'value="{running.reader}"><input name="next" value="/ui/"></form>'
              '<script>document.getElementById("f").submit()</script>')
    with chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        context.route("http://evil.example/**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                            body=attack))
        page = context.new_page()
        with page.expect_navigation(url=f"{running.base}/ui/**"):
            page.goto("http://evil.example/attack")
        page.goto(running.base + "/ui/")
        assert "/ui/login" in page.url, page.url  # not signed in as the attacker's token
        assert not [c for c in context.cookies() if c["name"] == "coldchain_session"]
        page.fill("input[name=token]", running.operator)  # the operator's own sign-in still works
        page.click("button[type=submit]")
        page.wait_for_url(f"{running.base}/ui/")
        assert page.locator("header .who").inner_text().startswith("web-operator")
    scrape = httpx.get(running.base + "/metrics", headers={"Authorization": f"Bearer {running.reader}"}, timeout=30)
    assert 'coldchain_auth_refused_total{reason="cross_origin",surface="dashboard"} 1.0' in scrape.text

def test_the_gate_values_shown_are_the_apis(running: Running) -> None:
    running.quiet()  # the live wave's evidence stops growing
    with chromium() as browser:
        page = sign_in(browser, running.base, running.reader)
        compared = 0
        for rollout in ("web-v1", "web-faulty", "web-live"):
            page.goto(f"/ui/rollouts/{rollout}")
            api = running.api(f"/rollouts/{rollout}/gates")
            judged = {w["wave"]: w for w in running.api(f"/rollouts/{rollout}")["wave_views"]}
            for wave in api["waves"]:
                table = page.locator(f".wave[data-wave='{wave['wave']}'] table.gates")
                assert table.get_attribute("data-judged") == ("yes" if wave["judged"] else "no")
                if wave["judged"]:  # the rollout's own view has the same verdicts
                    assert judged[wave["wave"]]["gates"] == wave["gates"]
                for gate in wave["gates"]:
                    row = table.locator(f"tr.gate[data-gate={gate['gate']}]")
                    for column in ("value", "limit"):
                        cell = row.locator(f"td.{column}")
                        shown = cell.get_attribute("data-value")
                        assert (float(shown) if shown else None) == gate[column], (rollout, gate)
                        assert cell.inner_text() == num(gate[column])
                    assert row.locator(".badge.pass").count() == (1 if gate["passed"] else 0)
                    compared += 1
        assert compared >= 10
        running.screens.shot(page, "14-live-gates-quiet")


def test_two_thousand_devices_page_and_filter_in_the_browser(running: Running) -> None:
    started = time.perf_counter()
    with running.cloud.sessions.begin() as session:
        for i in range(BULK):
            device = f"bulk-{i:04d}"
            state = DeviceState(device_id=device, online=True, board=("rpi4", "cm4")[i % 2], groups=[f"bulk-{i % 10}"])
            ingest(session, topics.state(device), state.to_json())
            if i % 3 == 0:  # and its last will: offline
                ingest(session, topics.state(device), DeviceState(device_id=device, online=False).to_json())
    running.measured["ingest_2000_states_s"] = time.perf_counter() - started
    total = running.queries.devices(DeviceFilter(limit=1)).total
    assert total == BULK + 2 * PER_GROUP
    with chromium() as browser:
        page = sign_in(browser, running.base, running.reader)
        assert page.locator(".paging .count").first.inner_text() == f"1–50 of {total:,}"
        assert page.locator("#devices tbody tr").count() == 50
        first = page.locator("#devices tbody tr td a").first.inner_text()
        page.click(".paging >> nth=0 >> a[rel=next]")
        assert page.locator(".paging .count").first.inner_text() == f"51–100 of {total:,}"
        assert page.locator("#devices tbody tr td a").first.inner_text() != first
        page.click(".paging >> nth=0 >> text=last »")
        last = total - (total - 1) % 50
        assert page.locator(".paging .count").first.inner_text() == f"{last:,}–{total:,} of {total:,}"
        running.screens.shot(page, "15-fleet-2000-last-page")

        page.fill("input[name=group]", "bulk-3")
        page.select_option("select[name=online]", "no")
        started = time.perf_counter()
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**online=no**")
        running.measured["filter_page_s"] = time.perf_counter() - started
        expected = sum(1 for i in range(BULK) if i % 10 == 3 and i % 3 == 0)
        assert page.locator(".paging .count").first.inner_text() == f"1–50 of {expected}"
        ids = page.locator("#devices tbody tr td:first-child a").all_inner_texts()
        assert len(ids) == 50 and all(int(i[5:]) % 10 == 3 and int(i[5:]) % 3 == 0 for i in ids)
        page.click(".paging >> nth=0 >> a[rel=next]")
        assert page.locator(".paging .count").first.inner_text() == f"51–{expected} of {expected}"
        assert page.locator("input[name=group]").input_value() == "bulk-3"  # the filters stay
        running.screens.shot(page, "16-fleet-2000-filtered")

        page.goto("/ui/?text=bulk-19&limit=200")
        assert page.locator("#devices tbody tr").count() == 100  # bulk-1900..1999
        started = time.perf_counter()
        page.goto("/ui/?limit=200")
        running.measured["fleet_page_200_rows_s"] = time.perf_counter() - started
        assert page.locator("#devices tbody tr").count() == 200
    print(f"\ndashboard with {total} devices: {running.measured}")
