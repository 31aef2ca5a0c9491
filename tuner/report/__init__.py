"""Reports on a study: tables, figures, Markdown/HTML, the end-of-study summary, the best-configuration
export and the dashboard note; ``python -m tuner.report`` writes one."""
