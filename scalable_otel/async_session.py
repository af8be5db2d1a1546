"""The start and close of an asynchronous `ScalableSession` (`asynchronous=True`, or one
attached to a `Client(asynchronous=True)`), on the event loop of its Dask client.

The same steps as a synchronous session's, in the same order and with the same deadline
(`RecordingOptions.close_timeout`), so a run records the same files, spans and metrics
either way. Dask's calls (`register_plugin`, `run`, `run_on_scheduler`,
`unregister_*`, closing the client and the cluster) are awaited on the loop; the
telemetry's blocking work (creating the run directory, starting the telemetry process
and waiting until it is ready, waiting for the last records, its close and flush,
writing run.json and plan.json, the progress bar) runs in a thread
(`asyncio.to_thread`), so the loop, and a scheduler or workers sharing it, never wait on
it. A failure of the telemetry is warned of once and never reaches the workflow.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from . import semconv as sc
from .instrumentation.scheduler_plugin import (
    TaskRecordPlugin,
    final_batches_wait,
    sync_scheduler_plugin,
)
from .instrumentation.worker_plugin import final_flush
from .telemetry import telemetry_disabled
from .termination import TERMINATION, exit_status

logger = logging.getLogger(__name__)

__all__ = ["close", "finish_off_loop", "start"]


async def _within(seconds: float, awaitable) -> bool:
    """Await `awaitable` at most `seconds`: whether it ended (its exception raised here)."""
    try:
        await asyncio.wait_for(awaitable, timeout=max(0.0, seconds))
    except asyncio.TimeoutError:
        return False
    return True


# --- start ----------------------------------------------------------------------------------
async def start(session, remote: bool):
    """Open the run directory and the OTel pipeline, then start or connect to Dask
    (`remote`: at the session's target, a scheduler's address)."""
    if session._attached:
        if not session._begun:
            await _begin_attached(session)
        return session
    session._started = time.time()
    plugin = TaskRecordPlugin(forward=remote, clients=())
    telemetry = not telemetry_disabled() and await asyncio.to_thread(
        session._open_telemetry, plugin
    )
    if telemetry:  # a SIGTERM handler is set from the main thread only: here, not there
        TERMINATION.add(session)
    try:
        if remote:
            session.client = await session._new_client(session.target)
        else:
            session.cluster = await session._start_cluster([plugin] if telemetry else [])
            session.client = await session._new_client(session.cluster)
    except BaseException as exc:
        if telemetry:  # the run ends before it began: say so in run.json
            await asyncio.to_thread(session._finish_telemetry, exit_status(type(exc)))
            TERMINATION.end_close(session, counted=False)
        raise
    if telemetry:
        await _attach_telemetry(session, plugin, remote)
        await asyncio.to_thread(session._start_progress)
    return session


async def _begin_attached(session) -> None:
    session._begun = True
    session._started = time.time()
    plugin = TaskRecordPlugin(forward=True, clients=())
    if telemetry_disabled() or not await asyncio.to_thread(session._open_telemetry, plugin):
        return
    TERMINATION.add(session)
    await _attach_telemetry(session, plugin, remote=True)
    await asyncio.to_thread(session._start_progress)


async def _attach_telemetry(session, plugin, remote: bool) -> None:
    """Put the plugins on the client's cluster and wait for the recorder; never raises."""
    try:
        for each in session._client_plugins(plugin, remote):
            await session.client.register_plugin(each, name=each.name)
        session._watch_driver_cache()
        session._plugins_attached = True
        await asyncio.to_thread(session._recorder_ready)
    except Exception as exc:
        logger.warning(
            "scalable-otel: telemetry not attached to Dask (%s); the workflow goes on", exc
        )


# --- close ----------------------------------------------------------------------------------
async def close(session, status: str | None = None) -> None:
    """Finish the run: flush workers, close Dask, end spans, write run.json."""
    counted = TERMINATION.begin_close()
    try:
        await _close(session, status)
    finally:
        try:
            await asyncio.to_thread(session._stop_progress)
        finally:
            TERMINATION.end_close(session, counted)


async def _close(session, status: str | None) -> None:
    # the synchronous close's steps (ScalableSession._close), awaited
    deadline = time.monotonic() + session.recording_options.close_timeout

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    session.close_split = {}
    recording = session._recording
    token = None
    if recording is not None:
        with session._timing("last_records"):
            try:
                if session._plugins_attached and session._connected():
                    token = await _mark_last_records(session, left)
                if token is not None and session.cluster is None:
                    await asyncio.to_thread(session._await_last_records, recording, token, left)
                    token = None
            except Exception:
                logger.debug("scalable-otel: final worker flush failed", exc_info=True)
            session._closing(recording)
    try:
        with session._timing("dask"):
            if session.cluster is None and recording is not None and session._connected():
                try:
                    if not await _within(left(), _detach_from_cluster(session)):
                        logger.debug("scalable-otel: plugins not unregistered in time")
                except Exception:
                    logger.debug("scalable-otel: plugins not unregistered", exc_info=True)
            if session.client is not None and not session._attached:
                await session.client.close()
            if session.cluster is not None:
                await _close_cluster(session, session._cluster_close_timeout(left()))
    finally:
        if recording is not None:
            if token is not None:
                with session._timing("last_records"):
                    await asyncio.to_thread(session._await_last_records, recording, token, left)
            await asyncio.to_thread(session._finish_telemetry, status, left())


async def _close_cluster(session, timeout: float) -> None:
    try:
        await session.cluster.close(timeout=timeout)
    except (TimeoutError, asyncio.TimeoutError):
        logger.warning(
            "scalable-otel: the Dask cluster did not close within %.0f s; "
            "the run ends without waiting for it",
            timeout,
        )


async def _mark_last_records(session, left) -> str | None:
    """As `ScalableSession._mark_last_records`, awaited."""
    client = session.client
    worker_plugin = sc.per_run(sc.WORKER_PLUGIN_NAME, session.run_id)
    token = uuid.uuid4().hex
    flushed: dict = {}

    async def flush() -> None:  # and each worker's heartbeat, in the same round trip
        run = client.run
        flushed.update(await run(final_flush, name=worker_plugin, token=token, heartbeat=True))

    if not await _within(left() / 2, flush()):
        return None
    plugin = sc.per_run(sc.SCHEDULER_PLUGIN_NAME, session.run_id)
    marked = client.run_on_scheduler(
        sync_scheduler_plugin,
        token=token,
        name=plugin,
        workers=[worker for worker, had_plugin in flushed.items() if had_plugin],
        timeout=final_batches_wait(left()),
    )
    if not await _within(left() / 2, marked):
        return None
    return token


async def _detach_from_cluster(session) -> None:
    client = session.client
    client.unsubscribe_topic(sc.per_run(sc.FORWARD_TOPIC, session.run_id))
    await client.unregister_worker_plugin(sc.per_run(sc.WORKER_PLUGIN_NAME, session.run_id))
    await client.unregister_scheduler_plugin(sc.per_run(sc.SCHEDULER_PLUGIN_NAME, session.run_id))


def finish_off_loop(session, status: str | None = None) -> None:
    """Finish an asynchronous session's run from outside its event loop, blocking.

    Its client's loop runs in another thread: the close runs there and this thread waits.
    Else (the loop is gone, as at interpreter exit, or this is its thread) Dask cannot be
    reached: the run's telemetry ends and run.json is written, the run's plugins stay on
    the cluster (named after the run, they record nothing more for it).
    """
    client = session.client
    try:
        if client is not None and not client.asynchronous and client.loop is not None:
            client.sync(close, session, status)
            return
    except Exception:
        logger.debug("scalable-otel: the run's close did not reach Dask", exc_info=True)
        if session._recording is None:  # the close got as far as its telemetry
            return
    try:
        if session._recording is not None:
            session._closing(session._recording)
            session._finish_telemetry(status)
    finally:
        try:
            session._stop_progress()
        finally:
            TERMINATION.end_close(session, counted=False)
