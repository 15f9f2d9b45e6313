import sys
from pathlib import Path

# The reference implementations in evaluation_oracles.py are shared by several test modules;
# pytest's importlib mode does not put test folders on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))
