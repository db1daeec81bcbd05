from ._harness import main

raise SystemExit(main())
