from fmriface.cli import main

raise SystemExit(main())
