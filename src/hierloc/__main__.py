from hierloc.cli import main

main()
