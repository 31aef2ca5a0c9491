import sys

from tuner.study.session import main

sys.exit(main())
