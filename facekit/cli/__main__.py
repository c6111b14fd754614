from facekit.cli.main import main

main()
