from tcpmesh.cli import main

main()
