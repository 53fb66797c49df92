"""A real Jupyter kernel driven as JupyterLab drives one (jupyter_client): run a cell, read what it shows,
interrupt it as the stop button does (SIGINT to the kernel's process group) or as `interrupt_mode: message`
does (an interrupt_request on the control channel; ipykernel then signals its own group)."""
import re
import time
from typing import Optional

import psutil
from jupyter_client.manager import start_new_kernel

_COLOR = re.compile(r'\x1b\[[0-9;]*m')


class Cell:
    """What one execution showed: its printed text, its error (ename, evalue, traceback lines) if any, and when the
    kernel ended it."""

    def __init__(self):
        self.text, self.error, self.ended_at = '', None, None

    @property
    def traceback(self) -> str:
        return _COLOR.sub('', '\n'.join(self.error['traceback'])) if self.error else ''


class Kernel:
    def __init__(self):
        self.manager, self.client = start_new_kernel(kernel_name='python3')
        self._cells: dict[str, Cell] = {}

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.manager.provisioner.process.pid)

    def engine_processes(self) -> list:
        """The processes vLLM started under the kernel (it names them VLLM::...)."""
        found = []
        for process in self.process.children(recursive=True):
            try:
                if process.name().startswith('VLLM'):
                    found.append(process)
            except psutil.NoSuchProcess:  # ended since the listing
                pass
        return found

    def restart(self) -> None:
        """As the Restart menu does: the old kernel shuts down (at exit it stops its engine), a new one starts."""
        self.manager.restart_kernel(now=False)
        self.client.wait_for_ready(timeout=120)

    def start(self, code: str) -> str:
        return self.client.execute(code)

    def wait(self, msg_id: str, timeout: float = 300, until: Optional[str] = None) -> Cell:
        """Read the cell's output until it ends, or (with `until`) until its printed text contains that."""
        cell = self._cells.setdefault(msg_id, Cell())
        deadline = time.time() + timeout
        while cell.ended_at is None and not (until and until in cell.text):
            msg = self.client.get_iopub_msg(timeout=max(1, deadline - time.time()))
            if msg['parent_header'].get('msg_id') != msg_id:
                continue
            kind, content = msg['msg_type'], msg['content']
            if kind == 'stream':
                cell.text += content['text']
            elif kind == 'error':
                cell.error = content
            elif kind == 'status' and content['execution_state'] == 'idle':
                cell.ended_at = msg['header']['date'].timestamp()  # the kernel's time: this process may read it late
        return cell

    def run(self, code: str, timeout: float = 300) -> Cell:
        return self.wait(self.start(code), timeout)

    def output(self, code: str, timeout: float = 300) -> str:
        """The cell's printed text; an error in it fails the caller."""
        cell = self.run(code, timeout)
        assert cell.error is None, cell.traceback
        return cell.text

    def interrupt(self, by: str = 'signal') -> float:
        """Interrupt as JupyterLab's stop button does ('signal') or as interrupt_mode 'message' does; the time."""
        if by == 'signal':
            self.manager.interrupt_kernel()
        else:
            self.client.control_channel.send(self.client.session.msg('interrupt_request', {}))
        return time.time()

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
