"""TEST DOUBLE of extensions-builtin/Lora/network.py (A1111 v1.10.1): a LoRA file on disk.

Upstream reads the safetensors metadata (alias = ss_output_name) and hashes the file; the
double takes the alias from its argument and hashes the file name.
"""

import hashlib
import os


class NetworkOnDisk:
    def __init__(self, name, filename):
        self.name = name
        self.filename = filename
        self.metadata = {}
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.alias = self.metadata.get("ss_output_name", self.name)
        self.hash = None
        self.shorthash = hashlib.sha256(filename.encode()).hexdigest()[0:12]
