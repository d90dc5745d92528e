from harstream.cli import main

raise SystemExit(main())
