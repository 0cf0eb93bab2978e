from train.evaluation.run import main

main()
