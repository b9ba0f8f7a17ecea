from charnn.cli import main

raise SystemExit(main())
