"""What instructors hand out: student notebooks generated from the solution masters, the learners'
copy of the course (no solutions, no hidden tests) and Gradescope's autograder zip."""
