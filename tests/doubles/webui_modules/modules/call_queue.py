"""TEST DOUBLE of modules/call_queue.py (A1111 v1.10.1): the lock every GPU job takes.

Upstream: `queue_lock = fifo_lock.FIFOLock()`, a fair, non-reentrant lock used as a context
manager by the txt2img/img2img tabs (wrap_gradio_gpu_call) and the API; a plain
threading.Lock has the same interface and non-reentrancy.
"""

import threading

queue_lock = threading.Lock()
