from humanvision.cli import main

main()
