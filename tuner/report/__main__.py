import sys

from tuner.report.study_report import main

sys.exit(main())
