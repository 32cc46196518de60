* HLM model building on the High School and Beyond data (the commands of the reference Stata log).
* Run with:  jaxhlm run examples/hsb_model_building.do      (no `use`: the bundled HSB data is used)

* Level-1 predictors ses and female, level-2 predictors sector and school size, with random slopes for both.
mixed mathach c.ses##c.sector c.ses##i.sized  i.female##i.sector i.female##i.sized  ///
    || id: ses female, cov(unstr)

* That model has problems with variance components; test each of them. First ses:
mixed mathach c.ses##c.sector c.ses##i.sized  i.female##i.sector i.female##i.sized  ///
    || id: ses, cov(unstr)
estat ic
est store sesrandom
mixed mathach c.ses##c.sector c.ses##i.sized  i.female##i.sector i.female##i.sized  ///
    || id:
est store noslope
lrtest sesrandom noslope
estat ic

* Now the slope variance for female:
mixed mathach c.ses##c.sector c.ses##i.sized  i.female##i.sector i.female##i.sized  ///
    || id: female, cov(unstr)
est store femalerandom
estat ic
lrtest noslope femalerandom

* Neither level-1 predictor needs a random slope; investigate the cross-level interactions.
mixed mathach c.ses##c.sector c.ses##i.sized i.female##i.sector i.female##i.sized || ///
    id:
test 1.female#1.sector=0
test 2.sized#c.ses=0, acc
test 3.sized#c.ses=0, acc

* We can jointly omit all those:
mixed mathach c.ses##c.sector i.female##i.sized || id:

* Could the size groups 2 and 3 be combined?
test 2.sized=3.sized
test 1.female#2.sized=1.female#3.sized, acc

* They can: one dummy for size, small vs large.
tab sized, gen(sized_)
tab sized_1

* The final parsimonious model, compared with the initial ones.
mixed mathach c.ses##c.sector i.female##i.sized_1 || id:
estat ic
lrtest . femalerandom
lrtest . sesrandom
