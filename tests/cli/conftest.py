import sys
from pathlib import Path

# cli_helpers.py is shared by the CLI test modules; pytest's importlib mode does not put test
# folders on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))
