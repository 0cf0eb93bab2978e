from train.aligned.run import main

main()
