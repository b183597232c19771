"""Widget messages while a cell blocks: the buttons of a run's widget act while its cell waits.

A cell that waits for its run blocks the kernel's main thread, and with it the kernel's
event loop, which is where ipykernel dispatches every shell message, the widgets' comm
messages (a button's click) included: a click would wait in the socket until the cell ends.
So while a cell blocks on a future, :func:`wait` reads the main shell's inbox itself (in
ipykernel 7 the shell channel thread forwards each message to the main thread over an
inproc socket, ``get_shell_channel_to_subshell_pair(None)``), dispatches comm messages at
once to the kernel's comm manager, and keeps every other message (the next cell's
``execute_request``, say) to hand back to the kernel's own handler, in order, once the cell
is done; as jupyter-ui-poll does with ``do_one_iteration`` on ipykernel 6. Outside such a
kernel (plain IPython, a test, a thread other than the kernel's main one) it just waits.
A KeyboardInterrupt (the kernel's stop button) interrupts the poll like any other wait.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import time
from typing import Any, TypeVar

T = TypeVar("T")
_COMM_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})
_pumping = threading.local()


def wait(future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """``future.result(timeout)``, dispatching widget messages meanwhile in a kernel's main thread."""
    kernel = _kernel()
    if kernel is None or getattr(_pumping, "active", False):
        return future.result(timeout)
    _pumping.active = True
    try:
        return _pump(kernel, future, timeout)
    finally:
        _pumping.active = False


def _kernel() -> Any:
    """The ipykernel kernel whose main thread this is and whose inbox can be read, else None."""
    if "ipykernel" not in sys.modules:
        return None
    from ipykernel.kernelbase import Kernel

    if not Kernel.initialized():
        return None
    kernel = Kernel.instance()
    channel = getattr(kernel, "shell_channel_thread", None)
    if channel is None or not channel.is_alive() or threading.current_thread() is not channel.parent_thread:
        return None  # not ipykernel 7's main thread, or the kernel is shutting down
    return kernel


def _pump(kernel: Any, future: concurrent.futures.Future[T], timeout: float | None) -> T:
    import zmq

    inbox = kernel.shell_channel_thread.manager.get_shell_channel_to_subshell_pair(None).to_socket
    done_read, done_write = os.pipe()  # the future's end wakes the poll at once
    future.add_done_callback(lambda _: os.write(done_write, b"."))
    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    poller.register(done_read, zmq.POLLIN)
    held: list[list[Any]] = []
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not future.done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                if not poller.poll(None if left is None else max(1, int(left * 1000))):
                    continue
            except zmq.ZMQError:  # the kernel closed its sockets (it is exiting): just wait
                return future.result(left)
            _drain(kernel, inbox, held)
        return future.result(timeout=0)
    finally:
        # What came with the last poll must be read now: the poll took the socket's
        # edge-triggered wake-up, so the kernel's own stream would never see it.
        _drain(kernel, inbox, held)
        future.add_done_callback(lambda _: _close(done_read, done_write))
        for frames in held:  # back to the kernel, in order, for when the cell is done
            kernel.io_loop.add_callback(kernel.shell_main, None, frames)


def _drain(kernel: Any, inbox: Any, held: list[list[Any]]) -> None:
    """Read every message waiting now: comm messages are dispatched, the others kept in ``held``."""
    import zmq

    while True:
        try:
            frames = inbox.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.ZMQError:  # nothing more now (zmq.Again), or the socket closed
            return
        if not _dispatch_comm(kernel, frames):
            held.append(frames)


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _dispatch_comm(kernel: Any, frames: list[Any]) -> bool:
    """Hand a comm message to the comm manager now; False for any other message."""
    session = kernel.session
    try:
        idents, rest = session.feed_identities(frames, copy=False)
        # A peek (content=False) does not record the signature: the kernel's own handler,
        # which gets every other message, would refuse it as a replay.
        if session.deserialize(rest, content=False, copy=False)["header"].get("msg_type") not in _COMM_MESSAGES:
            return False
        message = session.deserialize(rest, content=True, copy=False)
    except Exception:  # not ours to judge: the kernel's own handler reports it
        return False
    getattr(kernel.comm_manager, message["header"]["msg_type"])(kernel.shell_stream, idents, message)
    return True
