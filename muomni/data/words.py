"""The demo corpus's vocabulary: common English words by part of speech (data only).

Verbs are listed by base form; regular forms are derived in ``sentences.py``, irregular verbs
give "base past participle". Words in DOUBLING double their last consonant before -ed/-ing.
"""

PEOPLE = """
teacher doctor nurse farmer driver pilot baker cook chef writer painter singer dancer actor artist student
child boy girl baby mother father sister brother uncle aunt cousin grandmother grandfather neighbor friend
stranger visitor guest captain soldier sailor officer judge lawyer engineer scientist builder carpenter
plumber mechanic gardener waiter waitress manager clerk banker barber tailor poet reporter editor player
coach runner swimmer climber traveler tourist passenger customer shopkeeper librarian professor dentist
farmhand fisherman hunter king queen prince princess knight wizard giant stranger musician drummer
photographer programmer designer architect mayor president guard firefighter detective thief neighbor
grandson granddaughter husband wife partner classmate roommate volunteer director tutor nephew niece
""".split()

ANIMALS = """
dog cat horse cow pig sheep goat chicken duck goose rabbit mouse rat bird owl eagle hawk crow parrot
pigeon swan fish shark whale dolphin seal turtle frog snake lizard bear wolf fox deer moose lion tiger
elephant giraffe zebra monkey gorilla camel donkey kangaroo squirrel bee ant spider butterfly beetle
mosquito snail crab lobster octopus penguin bat hamster puppy kitten pony raccoon beaver otter
""".split()

THINGS = """
book pen pencil notebook letter envelope stamp map clock watch phone camera radio television computer
keyboard screen printer lamp candle mirror window door chair table desk sofa bed pillow blanket carpet
curtain shelf drawer cupboard basket bucket box bag suitcase backpack wallet purse umbrella hat coat
jacket shirt sweater dress skirt scarf glove sock shoe boot belt button ring necklace bracelet ticket
key lock bottle jar cup mug glass plate bowl spoon fork knife pan pot kettle oven stove fridge sink
towel soap brush comb toothbrush bicycle car truck bus train boat ship plane rocket wagon tractor
engine wheel tire ladder hammer nail screw saw shovel rope chain wire battery bulb fan heater guitar
piano violin drum flute trumpet ball kite doll puzzle game card coin gift parcel newspaper magazine
poster painting photograph picture statue vase flower tree bush leaf branch seed root rock stone pebble
shell feather candle balloon flag tent fence gate bridge tower wall roof floor ceiling staircase
chimney pipe hose tap cable plug switch remote calendar diary journal receipt invoice contract report
album record helmet mask uniform badge medal trophy crown sword shield arrow compass telescope
microscope magnet needle thread ribbon sticker tape glue ruler eraser marker crayon paintbrush canvas
easel tray napkin tablecloth blender toaster microwave dishwasher kite sled skateboard scooter
wheelbarrow lantern torch whistle bell horn trumpet anchor sail paddle net hook fishing rod barrel
crate carton package label folder binder stapler calculator charger laptop tablet speaker headphone
microphone cushion mattress hammock cradle stroller
""".split()

FOODS = """
apple banana orange lemon grape peach pear plum cherry strawberry melon pineapple mango tomato potato
carrot onion cabbage pepper cucumber pumpkin bean pea mushroom egg sandwich cookie cake pie muffin
biscuit pancake waffle pizza burger sausage noodle dumpling pretzel bagel doughnut cupcake sweet
candy lollipop almond walnut peanut olive radish turnip lettuce avocado coconut apricot raspberry
blueberry omelet taco burrito salad
""".split()

MASS = """
water milk juice coffee tea soup rice bread butter cheese sugar salt flour honey jam chocolate cream
pasta meat chicken fish sand snow rain mud ice smoke music money news advice furniture homework
traffic weather luggage paint oil gold silver wood paper cotton wool grass
""".split()

PLACES = """
kitchen garden library museum park school hospital station airport market bakery bank office factory
farm forest beach river lake mountain valley island desert village town city harbor bridge castle
church temple theater cinema restaurant cafe hotel shop store mall stadium gym pool zoo circus
playground classroom hallway basement attic garage barn stable cellar porch balcony yard field meadow
hill cave cliff shore pier dock warehouse laboratory studio gallery clinic pharmacy
corner street road highway tunnel square fountain cottage cabin apartment palace prison courthouse
""".split()

ABSTRACT = """
idea plan story dream question answer problem reason secret promise mistake lesson message joke song
poem rule law choice decision chance plan game match race party meeting lecture concert festival
holiday birthday wedding journey trip adventure accident surprise discovery invention experiment
project exam test result score price bill debt budget salary reward prize habit hobby skill talent
memory feeling opinion argument agreement truth lie rumor warning signal noise sound voice silence
shadow light color shape pattern picture language word sentence letter number list recipe schedule
appointment deadline moment minute hour day week month season morning evening night weekend future
history science art nature health energy power freedom peace danger safety comfort trouble luck
""".split()

ADJECTIVES = """
big small large tiny huge little tall short long wide narrow thick thin heavy light deep shallow high low
old new young ancient modern fresh stale hot cold warm cool wet dry clean dirty soft hard smooth rough
sharp dull bright dark pale loud quiet noisy silent fast slow quick early late happy sad angry calm
brave afraid nervous proud shy kind cruel gentle polite rude friendly lonely lucky clever smart wise
foolish silly funny serious strange odd normal simple easy difficult hard busy lazy tired sleepy hungry
thirsty full empty rich poor cheap expensive famous important useful useless careful careless honest
patient curious eager excited bored boring interesting beautiful pretty ugly handsome lovely nice
pleasant terrible awful wonderful amazing strong weak healthy sick broken perfect ready
red blue green yellow purple orange pink brown black white gray golden silver wooden plastic metal
glass paper woolen cotton round square flat sweet sour bitter salty spicy tasty delicious crisp juicy
ripe raw frozen warm sunny cloudy rainy windy foggy snowy stormy icy muddy dusty shiny sparkling
colorful striped spotted fancy plain tidy messy crowded empty distant nearby local foreign private
public secret hidden open closed safe dangerous wild tame fierce playful cheerful grumpy sleepy
thoughtful generous greedy jealous humble gentle graceful clumsy awkward elegant tough tender fragile
sturdy enormous gigantic miniature massive slim slender chubby fluffy fuzzy hairy bald curly straight
narrow crooked bent steep endless brief sudden gradual recent ordinary unusual rare common popular
mysterious magical ancient sacred royal rural urban tropical arctic coastal northern southern eastern
western central main extra spare final first second last next previous
""".split()

ADVERBS = """
quickly slowly quietly loudly carefully carelessly happily sadly angrily calmly gently softly brightly
easily badly well hard early late soon today tonight tomorrow yesterday always never often sometimes
rarely usually seldom again already still finally suddenly
gradually eventually immediately recently nearby outside inside upstairs downstairs abroad everywhere
somewhere anywhere together alone certainly probably perhaps maybe clearly honestly proudly bravely
politely rudely eagerly patiently nervously cheerfully silently warmly kindly boldly neatly gladly
""".split()

DEGREE = "very quite rather too almost nearly really so extremely fairly".split()

INTERJECTIONS = "oh wow well hey look listen yes no alas hooray goodness gosh".split()

NAMES = """
Alice Bob Carol David Emma Frank Grace Henry Isabel Jack Kate Leo Maria Nathan Olivia Peter Quinn Rachel
Sam Tina Uma Victor Wendy Xavier Yvonne Zach Anna Ben Chloe Daniel Ella Felix Georgia Harry Ivy James
Julia Kevin Laura Mark Nina Oscar Paula Robert Sarah Thomas Ursula Vincent William Amy Brian Claire
Diana Edward Fiona George Helen Ian Jane Karl Linda Michael Nora Oliver Patrick Rose Simon Teresa Walter
Adam Bella Charles Daisy Eric Flora Gordon Hannah Isaac Joseph Lily Martin Natalie Owen Philip Ruby
Steven Sophie Tom Violet Arthur Alan Betty Carl Dorothy Elena Fred Gloria Hugo Irene Jerry Lucy Max
Molly Ned Pamela Ralph Sally Timothy Vera Albert Agnes Lewis Margaret Susan Jessica Andrew Rebecca
""".split()

CITIES = """
London Paris Berlin Rome Madrid Lisbon Vienna Prague Dublin Oslo Stockholm Helsinki Athens Warsaw
Moscow Cairo Lagos Nairobi Tokyo Beijing Shanghai Seoul Delhi Mumbai Bangkok Sydney Melbourne Toronto
Montreal Vancouver Chicago Boston Denver Seattle Dallas Houston Miami Atlanta Phoenix Detroit Memphis
Nashville Portland Austin Mexico Lima Santiago Havana Brazil Canada France Spain Italy Germany
Ireland Scotland Wales England Norway Sweden Finland Denmark Poland Greece Turkey Egypt Kenya Japan
China India Russia Peru Chile Argentina Australia Iceland Holland Belgium Switzerland Austria Portugal
Morocco Texas Florida California Oregon Alaska Ohio Georgia Virginia Vermont Maine Montana Nevada Utah
Arizona Kansas Iowa Idaho Oxford Cambridge Glasgow Edinburgh Manchester Liverpool Bristol York
""".split()

TRANSITIVE = """
open close carry push pull lift drop wash clean paint fix repair cook bake boil fry taste smell touch
watch visit call help answer ask invite thank greet follow chase catch kick throw climb cross enter
explore visit collect count measure weigh compare check test study learn teach finish start begin use
borrow return deliver pack unpack load fill empty pour mix stir cut slice chop peel plant water pick
order buy sell rent share save spend earn owe pay lend hide find lose keep move carry fold hang hold
mend sew knit draw sketch photograph record film play practice improve describe explain discuss
mention remember forget notice recognize admire enjoy love like hate prefer need want expect imagine
believe trust doubt question warn remind protect defend attack rescue guide lead join leave reach
destroy build design create invent discover solve organize arrange prepare decorate wrap deliver
post print copy type scan download upload install replace remove delete attach lock unlock polish
scrub sweep dust iron feed hug kiss greet cheer applaud accept refuse offer suggest recommend
""".split()

INTRANSITIVE = """
arrive wait smile laugh cry shout whisper sing dance jump run walk hurry rest relax sleep dream
work play travel return stay listen talk agree disagree complain wonder worry hesitate pause breathe
cough sneeze yawn shiver sweat blink nod wave knock ring bark growl purr chirp buzz roar howl float
sink glow shine sparkle fade melt freeze boil burn rain snow vanish appear happen succeed fail improve
grow stop continue begin land depart explode collapse recover survive vote pray swim fly fall rise
""".split()

IRREGULAR = """
begin began begun|break broke broken|bring brought brought|build built built|buy bought bought
catch caught caught|choose chose chosen|come came come|cut cut cut|dig dug dug|draw drew drawn
drink drank drunk|drive drove driven|eat ate eaten|fall fell fallen|feed fed fed|feel felt felt
fight fought fought|find found found|fly flew flown|forget forgot forgotten|forgive forgave forgiven
freeze froze frozen|get got gotten|give gave given|go went gone|grow grew grown|hang hung hung
hear heard heard|hide hid hidden|hit hit hit|hold held held|keep kept kept|know knew known
lead led led|leave left left|lend lent lent|lose lost lost|make made made|meet met met|pay paid paid
put put put|read read read|ride rode ridden|ring rang rung|rise rose risen|run ran run|say said said
see saw seen|sell sold sold|send sent sent|set set set|shake shook shaken|shine shone shone
shoot shot shot|shut shut shut|sing sang sung|sink sank sunk|sit sat sat|sleep slept slept
speak spoke spoken|spend spent spent|stand stood stood|steal stole stolen|stick stuck stuck
strike struck struck|swim swam swum|swing swung swung|take took taken|teach taught taught
tear tore torn|tell told told|think thought thought|throw threw thrown|understand understood understood
wake woke woken|wear wore worn|win won won|write wrote written|bend bent bent|bite bit bitten
blow blew blown|deal dealt dealt|light lit lit|mean meant meant|seek sought sought|sweep swept swept
weep wept wept|lend lent lent|spin spun spun|split split split|spread spread spread|bet bet bet
""".replace("\n", "|").strip("|").split("|")

DOUBLING = set("""
stop drop shop plan chat grab hug jog nod rub skip slip step tap trip wrap admit prefer regret commit
beg hop knit plug chop pat pet ship stir trim whip begin cut dig get hit put run set shut sit swim win
forget spin split bet chip clap drag drum fit hum jam map mop pin rob shrug sip sob swap wed zip scan scrub
""".split())

IRREGULAR_PLURALS = {
    "child": "children", "person": "people", "man": "men", "woman": "women", "mouse": "mice",
    "goose": "geese", "foot": "feet", "tooth": "teeth", "sheep": "sheep", "fish": "fish", "deer": "deer",
    "moose": "moose", "knife": "knives", "leaf": "leaves", "wolf": "wolves", "shelf": "shelves",
    "loaf": "loaves", "half": "halves", "life": "lives", "wife": "wives", "thief": "thieves",
    "scarf": "scarves", "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes",
    "fisherman": "fishermen",
}
