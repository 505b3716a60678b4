from roargit.cli import main

raise SystemExit(main())
