from .cli import main
from .threads import configure
import sys

configure()  # torch's threads from the CPUs this process may use (lumiere/threads.py)
sys.exit(main())
